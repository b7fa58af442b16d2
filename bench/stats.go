package main

import (
	"math"
	"slices"
)

// summary is one figure: the median of its runs and their spread.
type summary struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Runs   []float64 `json:"runs"`
}

// summarize returns the median, min and max of runs. NaN and infinite values
// are dropped (a run that measured nothing is not a figure); ok is false when
// no run is left.
func summarize(runs []float64) (s summary, ok bool) {
	vals := make([]float64, 0, len(runs))
	for _, v := range runs {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 {
		return summary{}, false
	}
	s.Runs = slices.Clone(vals)
	slices.Sort(vals)
	n := len(vals)
	if n%2 == 1 {
		s.Median = vals[n/2]
	} else {
		s.Median = (vals[n/2-1] + vals[n/2]) / 2
	}
	s.Min, s.Max = vals[0], vals[n-1]
	return s, true
}
