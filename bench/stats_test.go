package main

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		name             string
		runs             []float64
		ok               bool
		median, min, max float64
	}{
		{"odd", []float64{3, 1, 2}, true, 2, 1, 3},
		{"even", []float64{4, 1, 3, 2}, true, 2.5, 1, 4},
		{"one", []float64{7}, true, 7, 7, 7},
		{"empty", nil, false, 0, 0, 0},
		{"nan dropped", []float64{math.NaN(), 5, 1, math.Inf(1), 3}, true, 3, 1, 5},
		{"all nan", []float64{math.NaN()}, false, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok := summarize(tt.runs)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if s.Median != tt.median || s.Min != tt.min || s.Max != tt.max {
				t.Errorf("got median %v min %v max %v, want %v %v %v", s.Median, s.Min, s.Max, tt.median, tt.min, tt.max)
			}
		})
	}
	// The caller's slice keeps its order: runs are reported as measured.
	in := []float64{3, 1, 2}
	s, _ := summarize(in)
	if in[0] != 3 || s.Runs[0] != 3 {
		t.Errorf("summarize reordered its input: %v %v", in, s.Runs)
	}
}
