package main

import (
	"errors"
	"testing"
)

// Written by nbdkit 1.32.5's stats filter after fio --fsync=32 at iodepth 1.
const statsSample = `total: 108484 ops, 2.791561 s, 410.93 MiB, 147.20 MiB/s
read: 2 ops, 0.000011 s, 8.00 KiB, 710.23 MiB/s op, 2.93 KiB/s total
  Request size and alignment breakdown:
    12 bits: 100.0% (2 reqs, 8.00 KiB total)
         12 bit aligned: 100.0% (2)
write: 105197 ops, 0.190344 s, 410.93 MiB, 2.11 GiB/s op, 147.20 MiB/s total
flush: 3287 ops, 0.000191 s, 0 bytes, 0 bytes/s op, 0 bytes/s total

`

func TestParseNBDStats(t *testing.T) {
	ops, err := parseNBDStats([]byte(statsSample))
	if err != nil {
		t.Fatal(err)
	}
	if got := ops["write"]; got.Ops != 105197 || got.Seconds != 0.190344 || got.Bytes != 410.93*(1<<20) {
		t.Errorf("write = %+v", got)
	}
	if got := ops["flush"]; got.Ops != 3287 || got.Bytes != 0 {
		t.Errorf("flush = %+v", got)
	}
	if got := ops["read"]; got.Ops != 2 || got.Bytes != 8192 {
		t.Errorf("read = %+v", got)
	}
	if ops["total"].Ops != 108484 {
		t.Errorf("total = %+v", ops["total"])
	}
	if _, ok := ops["trim"]; ok {
		t.Error("trim invented")
	}
}

func TestParseNBDStatsErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":        "",
		"no total":     "write: 1 ops, 0.1 s, 4.00 KiB, 1 MiB/s op, 1 MiB/s total\n",
		"bad ops":      "total: x ops, 0.1 s, 0 bytes, 0 bytes/s\n",
		"negative":     "total: -1 ops, 0.1 s, 0 bytes, 0 bytes/s\n",
		"bad unit":     "total: 1 ops, 0.1 s, 4.00 KB, 0 bytes/s\n",
		"short":        "total: 1 ops\n",
		"no colon":     "total 1 ops, 0.1 s, 0 bytes\n",
		"twice":        "total: 1 ops, 0.1 s, 0 bytes, 0\ntotal: 1 ops, 0.1 s, 0 bytes, 0\n",
		"nan time":     "total: 1 ops, NaN s, 0 bytes, 0\n",
		"missing secs": "total: 1 ops, 0.1, 0 bytes, 0\n",
	} {
		if _, err := parseNBDStats([]byte(in)); !errors.Is(err, errStatsFile) {
			t.Errorf("%s: err = %v, want errStatsFile", name, err)
		}
	}
}

func FuzzParseNBDStats(f *testing.F) {
	f.Add([]byte(statsSample))
	f.Add([]byte("total: 0 ops, 0.000000 s, 0 bytes, 0 bytes/s\n"))
	f.Add([]byte("total: 1 ops, 1 s, 1.5 EiB, x\n  hist\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, err := parseNBDStats(data)
		if err != nil {
			return
		}
		for name, op := range ops {
			if op.Ops < 0 || op.Seconds < 0 || op.Bytes < 0 {
				t.Fatalf("%s: negative figure accepted: %+v", name, op)
			}
		}
	})
}
