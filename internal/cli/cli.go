// Package cli holds what the wb-* commands share at their edge: parsing a
// command line with kong into one line of error and an exit status, and the
// plain tables and byte sizes they print. It knows nothing of caching.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/posener/complete"
	"github.com/willabides/kongplete"

	"github.com/writeboost/writeboost/internal/blockdev"
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
		kong.Vars{"version": name + " " + Version()},
	}, opts...)...)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, usageCode, true
	}
	// Run by the shell for completion (COMP_LINE set: bash's complete -C,
	// dist/completion), print the candidates and exit 0.
	kongplete.Complete(parser, kongplete.WithPredictors(predictors(opts)))
	kctx, err = parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, OneLine(err.Error()))
		return nil, usageCode, true
	}
	return kctx, 0, false
}

// Common is the flags every command has; embed it in the CLI struct with
// `embed:""`.
type Common struct {
	Version kong.VersionFlag `help:"Print the version (module version and VCS revision) and exit."`
}

// revision and modified are set by make build (-ldflags -X, see the
// Makefile): the checkout's revision and "true" when tracked files
// differed from it. They stand in for Go's own VCS stamping, which
// -buildvcs=false turns off.
var revision, modified string

// Version says which build this is: the module version and, when the
// binary was built from a checkout, the VCS revision, e.g.
// "v0.3.0 (rev 1a2b3c4d5e6f, modified, go1.26.0)".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build info)"
	}
	return version(bi, revision, modified == "true")
}

// version is Version from the build info and the revision make stamped.
func version(bi *debug.BuildInfo, makeRev string, makeModified bool) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev == "" && makeRev != "" {
		rev = makeRev
		if makeModified {
			modified = ", modified"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		rev = "unknown"
	}
	return fmt.Sprintf("%s (rev %s%s, %s)", v, rev, modified, bi.GoVersion)
}

// Predictors complete the values of a command line for the shell: a
// `predictor:"NAME"` tag names one, which returns every candidate (the
// shell keeps those matching the word typed). "file" is built in. Pass
// Predictors to Parse among the kong options.
type Predictors map[string]func() []string

// Apply makes Predictors a kong.Option; Parse reads them, kong does not.
func (Predictors) Apply(*kong.Kong) error { return nil }

// predictors gathers the Predictors among opts for kongplete.
func predictors(opts []kong.Option) map[string]complete.Predictor {
	m := map[string]complete.Predictor{"file": complete.PredictFiles("*")}
	for _, o := range opts {
		if p, ok := o.(Predictors); ok {
			for name, f := range p {
				m[name] = complete.PredictFunc(func(complete.Args) []string { return f() })
			}
		}
	}
	return m
}

// UsageError is a command line that parses but cannot be carried out as
// given (a bad volume name, a KEY VALUE out of range, a malformed URL or
// size): the command exits with its usage status, as for a parse error.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usage marks err as a usage error; nil stays nil.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return &UsageError{Err: err}
}

// Usagef is Usage(fmt.Errorf(format, args...)).
func Usagef(format string, args ...any) error { return Usage(fmt.Errorf(format, args...)) }

// IsUsage reports whether err is, or wraps, a usage error.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
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
	v, unit := blockdev.ScaleBytes(n)
	if unit == "B" {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// IsTerminal reports whether w is a terminal: progress bars and in-place
// refreshes are for people, plain lines for logs and pipes.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
