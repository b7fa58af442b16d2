package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
)

// A workload script is a text file, one operation a line:
//
//	# comment
//	phase NAME      the following lines belong to phase NAME
//	w OFF LEN       write LEN bytes at byte OFF (both multiples of 512;
//	                suffixes k and m: 4k, 1m)
//	wf OFF LEN      the same with FUA
//	f               FLUSH (fsync on a device or file, NBD_CMD_FLUSH)
//
// Every sector a write puts down is tagged with the script's line number,
// so the line number is the write's sequence number: reading a sector back
// names the line that wrote it, across guest and host, kernel and
// writeboost, without any other record.
type op struct {
	line   int    // 1-based line number: the tag of the sectors it writes
	phase  string // "" before the first phase line
	kind   string // "w", "wf", "f"
	off    uint64 // bytes
	length uint64 // bytes
}

const sectorSize = 512

func parseSize(s string) (uint64, error) {
	mul := uint64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mul, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mul, s = 1<<20, strings.TrimSuffix(s, "m")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	return n * mul, nil
}

func parseScript(path string) ([]op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ops []op
	phase := ""
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("%s:%d: %s: %q", path, line, why, sc.Text())
		}
		switch fields[0] {
		case "phase":
			if len(fields) != 2 {
				return nil, bad("phase takes a name")
			}
			phase = fields[1]
		case "f":
			if len(fields) != 1 {
				return nil, bad("f takes no arguments")
			}
			ops = append(ops, op{line: line, phase: phase, kind: "f"})
		case "w", "wf":
			if len(fields) != 3 {
				return nil, bad("w and wf take OFF LEN")
			}
			off, err1 := parseSize(fields[1])
			n, err2 := parseSize(fields[2])
			if err1 != nil || err2 != nil || n == 0 || off%sectorSize != 0 || n%sectorSize != 0 {
				return nil, bad("OFF and LEN must be multiples of 512 (LEN > 0)")
			}
			ops = append(ops, op{line: line, phase: phase, kind: fields[0], off: off, length: n})
		default:
			return nil, bad("unknown operation")
		}
	}
	return ops, sc.Err()
}

// Tagged sector layout (512 bytes):
//
//	0    8      16       24                     508   512
//	| magic | line | sector | fill (splitmix64 stream) | crc32c of 0..508 |
const (
	tagMagic  = "WBKERNEL"
	crcOffset = sectorSize - 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func putTag(b []byte, sector uint64, line int) {
	b = b[:sectorSize]
	copy(b, tagMagic)
	binary.LittleEndian.PutUint64(b[8:], uint64(line))
	binary.LittleEndian.PutUint64(b[16:], sector)
	x := sector*0x9E3779B97F4A7C15 ^ uint64(line)
	for i := 24; i < crcOffset; i += 4 {
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
		z = (z ^ z>>27) * 0x94D049BB133111EB
		binary.LittleEndian.PutUint32(b[i:], uint32(z^z>>31))
	}
	binary.LittleEndian.PutUint32(b[crcOffset:], crc32.Checksum(b[:crcOffset], castagnoli))
}

// Results of readTag besides a line number (> 0).
const (
	tagZero    = 0  // all zero: never written
	tagForeign = -1 // not a whole tag: torn, garbage, or another sector's
)

// readTag returns the line that wrote the sector b read at sector, tagZero
// or tagForeign.
func readTag(b []byte, sector uint64) int {
	b = b[:sectorSize]
	if string(b[:8]) != tagMagic {
		for _, c := range b {
			if c != 0 {
				return tagForeign
			}
		}
		return tagZero
	}
	if binary.LittleEndian.Uint32(b[crcOffset:]) != crc32.Checksum(b[:crcOffset], castagnoli) ||
		binary.LittleEndian.Uint64(b[16:]) != sector {
		return tagForeign
	}
	return int(binary.LittleEndian.Uint64(b[8:]))
}

func describeTag(t int) string {
	switch t {
	case tagZero:
		return "zeros"
	case tagForeign:
		return "untagged data"
	}
	return fmt.Sprintf("line %d", t)
}

// expected returns, per written sector, the line of the last write to it
// among ops of the phases up to and including through ("" = all).
func expected(ops []op, through string) (map[uint64]int, error) {
	want := map[uint64]int{}
	if through != "" {
		found := false
		for _, o := range ops {
			if o.phase == through {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("no phase %q in the script", through)
		}
	}
	seen := false
	for _, o := range ops {
		if through != "" && o.phase != through && seen {
			break
		}
		if o.phase == through {
			seen = true
		}
		if o.kind == "w" || o.kind == "wf" {
			for s := o.off / sectorSize; s < (o.off+o.length)/sectorSize; s++ {
				want[s] = o.line
			}
		}
	}
	return want, nil
}
