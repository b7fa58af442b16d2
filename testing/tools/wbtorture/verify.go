package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/writeboost/writeboost/testing/tools/nbdclient"
)

// verifyResult is one verify run.
type verifyResult struct {
	sectors     uint64
	bad         uint64
	exactPrefix bool
	maxSeq      uint64 // the newest write found
}

// readRegion reads the whole region (chunk bytes per request, a few in
// flight) and returns the seq every sector holds; garbage sectors are
// reported through bad and get seq ^0 (never a valid seq).
func readRegion(ctx context.Context, c *nbdclient.Client, sectors uint64, chunk uint64, bad func(s uint64, err error)) ([]uint64, error) {
	rec := make([]uint64, sectors)
	chunkSectors := chunk / sectorSize
	var mu sync.Mutex // serialises bad()
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for start := uint64(0); start < sectors; start += chunkSectors {
		n := min(chunkSectors, sectors-start)
		g.Go(func() error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b := make([]byte, n*sectorSize)
			if err := c.ReadAt(b, start*sectorSize); err != nil {
				return fmt.Errorf("read sectors %d+%d: %w", start, n, err)
			}
			for i := uint64(0); i < n; i++ {
				seq, err := readTag(b[i*sectorSize:], start+i)
				if err != nil {
					seq = ^uint64(0)
					mu.Lock()
					bad(start+i, err)
					mu.Unlock()
				}
				rec[start+i] = seq
			}
			return nil
		})
	}
	return rec, g.Wait()
}

// runVerify checks every sector of the region after a restart: it must
// hold its durable write or a later one issued to it; never garbage, never
// older; with strict (after a clean stop), not older than the last
// acknowledged write either. Up to 20 bad sectors are described on report. On success the
// recovered values become the new baseline (after a FLUSH).
func runVerify(ctx context.Context, st *State, uri string, strict bool, report io.Writer) (verifyResult, error) {
	var res verifyResult
	c, err := nbdclient.Dial(ctx, uri)
	if err != nil {
		return res, err
	}
	defer c.Close()
	if c.Size() < st.Sectors*sectorSize {
		return res, fmt.Errorf("export is %d bytes, the state covers %d", c.Size(), st.Sectors*sectorSize)
	}
	describe := func(s uint64, what string) {
		res.bad++
		if res.bad <= 20 {
			fmt.Fprintf(report, "BAD sector %d: %s (durable seq %d, later writes %v)\n", s, what, st.Durable[s], st.Pending[s])
		}
	}
	rec, err := readRegion(ctx, c, st.Sectors, 1<<20, func(s uint64, err error) { describe(s, err.Error()) })
	if err != nil {
		return res, err
	}
	res.sectors = st.Sectors
	for s, r := range rec {
		if r == ^uint64(0) {
			continue // already counted as garbage
		}
		res.maxSeq = max(res.maxSeq, r)
		switch st.judge(uint64(s), r, strict) {
		case verdictOlder:
			describe(uint64(s), fmt.Sprintf("holds seq %d, older than the durable write: lost", r))
		case verdictUnacked:
			describe(uint64(s), fmt.Sprintf("holds seq %d, older than the last acknowledged write %d (after a clean stop)", r, st.Acked[s]))
		case verdictUnknown:
			describe(uint64(s), fmt.Sprintf("holds seq %d, never written to this sector", r))
		}
	}
	if res.bad == 0 {
		res.exactPrefix = st.exactPrefix(rec)
		if err := c.Flush(); err != nil {
			return res, fmt.Errorf("flush after verify: %w", err)
		}
		st.rebase(rec)
	}
	st.Cycles++
	st.SectorsChecked += res.sectors
	st.Bad += res.bad
	if res.exactPrefix {
		st.ExactPrefix++
	}
	if res.bad > 0 {
		return res, errors.New("bad sectors found")
	}
	return res, nil
}
