// Command wb-testimg writes a testimg cache image, the backing device at
// the power cut, and the expected volume, for shell scenarios and
// benchmarks; it prints the image's facts as one JSON object.
//
//	wb-testimg [--seed N] [--nr-segments N] [--segments N] [--backing-blocks N]
//	           [--damage NAME] CACHE [BACKING [EXPECTED]]
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/alecthomas/kong"

	"github.com/writeboost/writeboost/internal/testimg"
)

type cli struct {
	Seed          uint64 `default:"1" help:"Seed of the random workload."`
	NrSegments    uint64 `default:"64" help:"Segments in the ring (the cache is 1 MiB + N * 512 KiB)."`
	Segments      uint64 `default:"100" help:"Segments the workload seals; more than --nr-segments wraps the ring."`
	BackingBlocks uint64 `default:"4096" help:"Backing device size in 4 KiB blocks."`
	Damage        string `default:"clean" help:"Variant: clean, torn-newest, torn-tail, mid-log-corruption, wrong-slot, unformatted, garbage-magic, truncated, truncated-small, torn-in-flight, durable-corruption."`
	Cache         string `arg:"" help:"Cache image to write."`
	Backing       string `arg:"" optional:"" help:"Where to write the backing device at the power cut."`
	Expected      string `arg:"" optional:"" help:"Where to write the expected volume (after a full writeback)."`
}

func main() {
	var c cli
	kong.Parse(&c, kong.Name("wb-testimg"), kong.Description("Write a cache image from a seeded random workload (tests only)."))
	if err := c.run(os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "wb-testimg: %v\n", err)
		os.Exit(1)
	}
}

func (c *cli) run(w io.Writer) error {
	d := -1
	for _, x := range testimg.Damages() {
		if x.String() == c.Damage {
			d = int(x)
		}
	}
	if d < 0 {
		return fmt.Errorf("unknown --damage %q", c.Damage)
	}
	im, err := testimg.Write(c.Cache, testimg.Config{Seed: c.Seed, NrSegments: c.NrSegments, Segments: c.Segments,
		BackingBlocks: c.BackingBlocks, Damage: testimg.Damage(d)})
	if err != nil {
		return err
	}
	if c.Backing != "" {
		if err := im.WriteBacking(c.Backing); err != nil {
			return err
		}
	}
	if c.Expected != "" && im.Expected != nil {
		if err := os.WriteFile(c.Expected, im.Expected, 0o644); err != nil {
			return err
		}
	}
	return json.NewEncoder(w).Encode(map[string]any{
		"cache_size": im.CacheSize, "formatted": im.Formatted, "max_id": im.MaxID,
		"last_flushed_id": im.LastFlushedID, "last_writeback_id": im.LastWritebackID,
		"superblock_record": im.SuperRecord, "valid_segments": im.ValidSegments,
		"nr_dirty_blocks": im.NrDirtyBlocks, "bad_id": im.BadID, "damage": im.Config.Damage.String(),
	})
}
