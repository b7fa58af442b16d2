package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/google/renameio/v2"
	"github.com/olekukonko/tablewriter"
)

// row is one figure of the run. Median, Min, Max and Runs are in Unit;
// Missing says why there is no figure (tool absent, benchmark not written,
// server failed), and such a row never gets a verdict other than "missing".
type row struct {
	ID       string    `json:"id"` // group/workload/subject
	Group    string    `json:"group"`
	Workload string    `json:"workload"`
	Subject  string    `json:"subject"`
	Unit     string    `json:"unit"`
	Better   string    `json:"better"` // "higher" or "lower"
	Median   float64   `json:"median"`
	Min      float64   `json:"min"`
	Max      float64   `json:"max"`
	Runs     []float64 `json:"runs"`
	Missing  string    `json:"missing,omitempty"`
	Note     string    `json:"note,omitempty"`

	// The row's reference (another row of the same run) and the ratio
	// Median / reference Median, when both exist.
	Ref       string   `json:"reference,omitempty"`
	RefLabel  string   `json:"reference_label,omitempty"`
	RefMedian *float64 `json:"reference_median,omitempty"`
	Ratio     *float64 `json:"ratio,omitempty"`
	// The first target judged on this row, if any (the targets list has all).
	Target  string `json:"target,omitempty"`
	Verdict string `json:"verdict,omitempty"`
}

func (r *row) ok() bool { return r.Missing == "" && len(r.Runs) > 0 }

// target is a goal of issue 7. With Ref set it judges the ratio of two rows'
// medians, otherwise the row's median itself. Op is ">=", "<=" or "~" (within
// Tol of Value).
type target struct {
	Name  string  `json:"name"`
	Desc  string  `json:"description"`
	Row   string  `json:"row"`
	Ref   string  `json:"reference,omitempty"`
	Op    string  `json:"op"`
	Value float64 `json:"value"`
	Tol   float64 `json:"tolerance,omitempty"`
	// FullOnly: the rows are measured in full mode only (--quick leaves
	// the workload's subjects out to stay short).
	FullOnly bool `json:"full_only,omitempty"`
	// When, if set, is the condition under which the target applies:
	// row When.Row's median above row When.Above's (both measured in the
	// run). Otherwise the verdict is "n/a", with the two figures in Why.
	When    *cond    `json:"when,omitempty"`
	Got     *float64 `json:"got,omitempty"` // the ratio, or the row's median
	Verdict string   `json:"verdict"`       // PASS, MISS, missing or n/a
	Why     string   `json:"why,omitempty"` // for missing and n/a
}

// cond is a target's condition: row Row's median above row Above's.
type cond struct {
	Row   string `json:"row"`
	Above string `json:"above"`
	Desc  string `json:"description"` // what it means, for Why
}

func (t *target) goal() string {
	s := t.Op + " " + trim(t.Value)
	if t.Op == "~" {
		s = "~ " + trim(t.Value) + " ±" + trim(t.Tol)
	}
	if t.Ref != "" {
		s += "x"
	}
	return t.Name + " " + s
}

// results is the whole run: what the JSON file holds.
type results struct {
	Started string            `json:"started"`
	Mode    string            `json:"mode"`
	Seconds float64           `json:"seconds"`
	Host    map[string]string `json:"host"`
	Config  map[string]string `json:"config"`
	Rows    []*row            `json:"rows"`
	Targets []*target         `json:"targets"`
	Errors  []string          `json:"errors,omitempty"`

	byID map[string]*row
}

func newResults() *results {
	return &results{byID: map[string]*row{}, Host: map[string]string{}, Config: map[string]string{}}
}

// add records a row made of runs; an empty runs list with no Missing reason
// is itself recorded as missing.
func (res *results) add(r *row, runs []float64) *row {
	if r.ID == "" {
		r.ID = r.Group + "/" + r.Workload + "/" + r.Subject
	}
	if r.Better == "" {
		r.Better = "higher"
	}
	if r.Missing == "" {
		if s, ok := summarize(runs); ok {
			r.Median, r.Min, r.Max, r.Runs = s.Median, s.Min, s.Max, s.Runs
		} else {
			r.Missing = "no run produced a figure"
		}
	}
	if old, ok := res.byID[r.ID]; ok {
		*old = *r
		return old
	}
	res.Rows = append(res.Rows, r)
	res.byID[r.ID] = r
	return r
}

func (res *results) missing(r *row, why string) *row {
	r.Missing = why
	return res.add(r, nil)
}

// judge fills in every row's reference ratio and every target's verdict.
func (res *results) judge() {
	for _, r := range res.Rows {
		r.RefMedian, r.Ratio, r.RefLabel = nil, nil, ""
		if ref, ok := res.byID[r.Ref]; ok {
			r.RefLabel = ref.Subject
			if ref.Workload != r.Workload {
				r.RefLabel = ref.Subject + " " + ref.Workload
			}
			if r.ok() && ref.ok() && ref.Median != 0 {
				m, q := ref.Median, r.Median/ref.Median
				r.RefMedian, r.Ratio = &m, &q
			}
		}
	}
	for _, t := range res.Targets {
		t.Got, t.Verdict, t.Why = nil, "missing", ""
		r, ok := res.byID[t.Row]
		switch {
		case !ok && t.FullOnly && res.Mode == "quick":
			t.Why = "measured in full mode only"
		case !ok:
			t.Why = t.Row + " not measured"
		case !r.ok():
			t.Why = t.Row + ": " + r.Missing
		}
		got := r != nil && r.ok()
		var v float64
		if got {
			v = r.Median
		}
		if t.Ref != "" && got {
			ref, ok := res.byID[t.Ref]
			switch {
			case !ok:
				t.Why, got = t.Ref+" not measured", false
			case !ref.ok():
				t.Why, got = t.Ref+": "+ref.Missing, false
			case ref.Median == 0:
				t.Why, got = t.Ref+" measured zero", false
			default:
				v = r.Median / ref.Median
			}
		}
		if got && t.When != nil {
			a, b := res.byID[t.When.Row], res.byID[t.When.Above]
			switch {
			case a == nil || !a.ok():
				t.Why, got = t.When.Row+" not measured (the condition of this target)", false
			case b == nil || !b.ok():
				t.Why, got = t.When.Above+" not measured (the condition of this target)", false
			case a.Median <= b.Median:
				t.Verdict, t.Why, got = "n/a", fmt.Sprintf("only where %s: %s <= %s", t.When.Desc, trim(a.Median), trim(b.Median)), false
			}
		}
		if got {
			t.Got = &v
			pass := false
			switch t.Op {
			case ">=":
				pass = v >= t.Value
			case "<=":
				pass = v <= t.Value
			case "~":
				pass = math.Abs(v-t.Value) <= t.Tol
			}
			t.Verdict = "MISS"
			if pass {
				t.Verdict = "PASS"
			}
		}
		if r != nil && r.Target == "" && (t.Ref == "" || t.Ref == r.Ref) {
			r.Target, r.Verdict = t.goal(), t.Verdict
		}
	}
}

// trim formats a figure with about four significant digits.
func trim(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a >= 0.01:
		return strconv.FormatFloat(v, 'f', 3, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// printTables writes the figures table and the targets table.
func (res *results) printTables(w io.Writer) {
	t := tablewriter.NewTable(w)
	t.Header([]string{"group", "workload", "subject", "median", "min-max", "unit", "reference", "ratio", "target", "verdict"})
	for _, r := range res.Rows {
		med, spread := "-", "missing: "+short(r.Missing, 48)
		if r.ok() {
			med, spread = trim(r.Median), trim(r.Min)+"-"+trim(r.Max)
		}
		ratio := ""
		if r.Ratio != nil {
			ratio = trim(*r.Ratio) + "x"
		}
		t.Append([]string{r.Group, r.Workload, r.Subject, med, spread, r.Unit, r.RefLabel, ratio, r.Target, r.Verdict})
	}
	t.Render()

	fmt.Fprintln(w)
	tt := tablewriter.NewTable(w)
	tt.Header([]string{"target", "what", "got", "goal", "verdict"})
	for _, g := range res.Targets {
		got := short(g.Why, 60)
		if g.Got != nil {
			got = trim(*g.Got)
			if g.Ref != "" {
				got += "x"
			}
		}
		tt.Append([]string{g.Name, g.Desc, got, strings.TrimPrefix(g.goal(), g.Name+" "), g.Verdict})
	}
	tt.Render()
}

// writeJSON writes the results atomically (renameio: no partial file).
func (res *results) writeJSON(path string) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := renameio.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// short cuts s to n runes for the table; the JSON file has it whole.
func short(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
