module github.com/writeboost/writeboost

go 1.26
