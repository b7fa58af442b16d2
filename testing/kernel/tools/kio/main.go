// Command kio is the workload and checking tool of the kernel interop suite
// (testing/kernel). The same binary runs in the guest, against the kernel
// target's /dev/mapper device or a virtio disk, and on the host, against
// image files or a writeboost volume over NBD, so both sides write and read
// exactly the same bytes.
//
//	kio write  --target T --script S [--phase P]   run the script (or one phase of it)
//	kio verify --target T --script S [--through P] every sector holds what the script wrote last
//	kio tags   --target T SECTOR...                which script line wrote each sector
//	kio sha    --target T                          sha256 of the whole device
//	kio diff   [--ignore SECTOR,...] A B           sectors where two devices differ
//
// T is a block device or a file path, or an NBD URI (nbd+unix:///NAME?socket=PATH).
// The script format is in script.go.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "kio: %v\n", err)
		os.Exit(1)
	}
}

const chunk = 1 << 20

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: kio write|verify|tags|sha|diff [flags]")
	}
	fs := flag.NewFlagSet("kio "+args[0], flag.ContinueOnError)
	tgt := fs.String("target", "", "block device, file or NBD URI")
	script := fs.String("script", "", "workload script")
	phase := fs.String("phase", "", "write: run only this phase")
	through := fs.String("through", "", "verify: the script's writes up to the end of this phase")
	ignore := fs.String("ignore", "", "diff: sectors to leave out, comma separated (N or N-M)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "write":
		return cmdWrite(*tgt, *script, *phase)
	case "verify":
		return cmdVerify(*tgt, *script, *through)
	case "tags":
		return cmdTags(*tgt, fs.Args())
	case "sha":
		return cmdSha(*tgt)
	case "diff":
		if fs.NArg() != 2 {
			return fmt.Errorf("usage: kio diff [--ignore N,N-M,...] A B")
		}
		return cmdDiff(fs.Arg(0), fs.Arg(1), *ignore)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func cmdWrite(spec, script, phase string) error {
	ops, err := parseScript(script)
	if err != nil {
		return err
	}
	t, err := openTarget(spec, true)
	if err != nil {
		return err
	}
	defer t.Close()
	start := time.Now()
	var writes, flushes int
	var bytes uint64
	ran := false
	for _, o := range ops {
		if phase != "" && o.phase != phase {
			continue
		}
		ran = true
		switch o.kind {
		case "f":
			if err := t.Flush(); err != nil {
				return fmt.Errorf("line %d: flush: %w", o.line, err)
			}
			flushes++
		case "w", "wf":
			if o.off+o.length > t.Size() {
				return fmt.Errorf("line %d: write past the end of %s (%d bytes)", o.line, spec, t.Size())
			}
			buf := alignedBuf(int(o.length))
			for i := uint64(0); i < o.length/sectorSize; i++ {
				putTag(buf[i*sectorSize:], o.off/sectorSize+i, o.line)
			}
			if err := t.WriteAt(buf, o.off, o.kind == "wf"); err != nil {
				return fmt.Errorf("line %d: %w", o.line, err)
			}
			writes++
			bytes += o.length
		}
	}
	if !ran {
		return fmt.Errorf("no operation in phase %q", phase)
	}
	fmt.Printf("kio write: %d writes (%d KiB), %d flushes in %.2fs\n", writes, bytes>>10, flushes, time.Since(start).Seconds())
	return nil
}

// scan reads the whole target in chunks and calls fn per chunk; it returns
// the sha256 of the device.
func scan(t target, fn func(buf []byte, off uint64)) (string, error) {
	h := sha256.New()
	buf := alignedBuf(chunk)
	for off := uint64(0); off < t.Size(); off += chunk {
		n := min(uint64(chunk), t.Size()-off)
		if err := t.ReadAt(buf[:n], off); err != nil {
			return "", err
		}
		h.Write(buf[:n])
		if fn != nil {
			fn(buf[:n], off)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func cmdVerify(spec, script, through string) error {
	ops, err := parseScript(script)
	if err != nil {
		return err
	}
	want, err := expected(ops, through)
	if err != nil {
		return err
	}
	t, err := openTarget(spec, false)
	if err != nil {
		return err
	}
	defer t.Close()
	var bad []string
	nbad := 0
	sum, err := scan(t, func(buf []byte, off uint64) {
		for i := 0; i < len(buf)/sectorSize; i++ {
			s := off/sectorSize + uint64(i)
			got := readTag(buf[i*sectorSize:], s)
			if w := want[s]; got != w {
				nbad++
				if len(bad) < 12 {
					bad = append(bad, fmt.Sprintf("sector %d (block %d+%d): want %s, got %s", s, s/8, s%8, describeTag(w), describeTag(got)))
				}
			}
		}
	})
	if err != nil {
		return err
	}
	scope := "the whole script"
	if through != "" {
		scope = "the script through phase " + through
	}
	if nbad > 0 {
		for _, b := range bad {
			fmt.Println("  " + b)
		}
		return fmt.Errorf("verify %s: %d of %d sectors differ from %s (sha256 %s)", spec, nbad, t.Size()/sectorSize, scope, sum)
	}
	fmt.Printf("kio verify: %d sectors as %s left them (%d written), sha256 %s\n", t.Size()/sectorSize, scope, len(want), sum)
	return nil
}

func cmdTags(spec string, sectors []string) error {
	t, err := openTarget(spec, false)
	if err != nil {
		return err
	}
	defer t.Close()
	buf := alignedBuf(4096)
	for _, a := range sectors {
		s, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			return fmt.Errorf("sector %q: %w", a, err)
		}
		// Read the aligned block around it: O_DIRECT on a 4 KiB device.
		if err := t.ReadAt(buf, s/8*4096); err != nil {
			return err
		}
		fmt.Printf("%d %d\n", s, readTag(buf[s%8*sectorSize:], s))
	}
	return nil
}

func cmdSha(spec string) error {
	t, err := openTarget(spec, false)
	if err != nil {
		return err
	}
	defer t.Close()
	sum, err := scan(t, nil)
	if err != nil {
		return err
	}
	fmt.Println(sum)
	return nil
}

func parseIgnore(s string) (func(uint64) bool, error) {
	type rng struct{ a, b uint64 }
	var rs []rng
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--ignore %q: %w", f, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil {
				return nil, fmt.Errorf("--ignore %q: %w", f, err)
			}
		}
		rs = append(rs, rng{a, b})
	}
	return func(s uint64) bool {
		for _, r := range rs {
			if s >= r.a && s <= r.b {
				return true
			}
		}
		return false
	}, nil
}

func cmdDiff(a, b, ignore string) error {
	skip, err := parseIgnore(ignore)
	if err != nil {
		return err
	}
	ta, err := openTarget(a, false)
	if err != nil {
		return err
	}
	defer ta.Close()
	tb, err := openTarget(b, false)
	if err != nil {
		return err
	}
	defer tb.Close()
	if ta.Size() != tb.Size() {
		return fmt.Errorf("diff: %s has %d bytes, %s %d", a, ta.Size(), b, tb.Size())
	}
	ba, bb := alignedBuf(chunk), alignedBuf(chunk)
	var runs []string
	var differ, ignored uint64
	runStart, runEnd := int64(-1), int64(-1)
	flushRun := func() {
		if runStart >= 0 {
			runs = append(runs, fmt.Sprintf("%d-%d", runStart, runEnd))
			runStart = -1
		}
	}
	for off := uint64(0); off < ta.Size(); off += chunk {
		n := min(uint64(chunk), ta.Size()-off)
		if err := ta.ReadAt(ba[:n], off); err != nil {
			return err
		}
		if err := tb.ReadAt(bb[:n], off); err != nil {
			return err
		}
		for i := uint64(0); i < n/sectorSize; i++ {
			s := off/sectorSize + i
			if string(ba[i*sectorSize:(i+1)*sectorSize]) == string(bb[i*sectorSize:(i+1)*sectorSize]) {
				continue
			}
			if skip(s) {
				ignored++
				continue
			}
			differ++
			if runStart >= 0 && int64(s) == runEnd+1 {
				runEnd = int64(s)
				continue
			}
			flushRun()
			runStart, runEnd = int64(s), int64(s)
		}
	}
	flushRun()
	if differ > 0 {
		if len(runs) > 20 {
			runs = append(runs[:20], "...")
		}
		return fmt.Errorf("diff: %d sectors differ (%d more in ignored sectors): %s", differ, ignored, strings.Join(runs, " "))
	}
	fmt.Printf("kio diff: equal in every sector (%d differing sectors ignored as asked)\n", ignored)
	return nil
}
