// Package cli holds what the wb-* commands share at their edge: parsing a
// command line with kong into one line of error and an exit status, and the
// plain tables and byte sizes they print. It knows nothing of caching.
package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
	"golang.org/x/term"
)

// exit is how kong's Exit (after --help) unwinds out of parsing.
type exit struct{ code int }

// Parse parses args into grammar (a kong CLI struct). When parsing ends the
// run, done is true and code is the exit status: 0 after --help (printed
// to stdout), usageCode after a usage error, which is printed to stderr as
// one line "name: error". opts are further kong options, such as the
// kong.Vars that help tags interpolate.
func Parse(name, description string, grammar any, args []string, stdout, stderr io.Writer, usageCode int, opts ...kong.Option) (kctx *kong.Context, code int, done bool) {
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(exit)
			if !ok {
				panic(r)
			}
			kctx, code, done = nil, e.code, true
		}
	}()
	parser, err := kong.New(grammar, append([]kong.Option{
		kong.Name(name),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exit{code}) }),
	}, opts...)...)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, usageCode, true
	}
	kctx, err = parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, OneLine(err.Error()))
		return nil, usageCode, true
	}
	return kctx, 0, false
}

// OneLine folds s onto one line: a command's error is one line.
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// NewTable returns a plain ASCII table: it survives any terminal, pager
// and mail client.
func NewTable(w io.Writer, align ...tw.Align) *tablewriter.Table {
	return tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{Symbols: tw.NewSymbols(tw.StyleASCII)})),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithRowAlignmentConfig(tw.CellAlignment{Global: tw.AlignLeft, PerColumn: align}),
	)
}

// HumanBytes formats n bytes with a binary unit: "512 B", "1.5 MiB".
func HumanBytes(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

// IsTerminal reports whether w is a terminal: progress bars and in-place
// refreshes are for people, plain lines for logs and pipes.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
