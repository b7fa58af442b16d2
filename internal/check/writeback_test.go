package check

import (
	"fmt"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/testimg"
)

// TestWritebackDryRunCountsWrites: a dry run's figures are those of the
// real run, and the real run's Writes are the write requests the backing
// device saw, at the default windows and at windows that cut runs short.
func TestWritebackDryRunCountsWrites(t *testing.T) {
	type windows struct {
		sectors, blocks int
		gap, read       int64
	}
	saved := windows{wbWindowSectors, wbWindowBlocks, wbMaxGap, wbMaxRead}
	t.Cleanup(func() {
		wbWindowSectors, wbWindowBlocks, wbMaxGap, wbMaxRead = saved.sectors, saved.blocks, saved.gap, saved.read
	})
	for i, w := range []windows{saved, {7, 3, 8 << 10, 16 << 10}, {64, 64, 0, 4096}, {1000, 5, 1 << 20, 1 << 20}} {
		t.Run(fmt.Sprint(w), func(t *testing.T) {
			wbWindowSectors, wbWindowBlocks, wbMaxGap, wbMaxRead = w.sectors, w.blocks, w.gap, w.read
			im, dev, _ := fixture(t, baseConfig(uint64(20+i), testimg.TornTail))
			r, err := Check(dev, dev.Size(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			back := blockdev.NewFaulty(memBacking(t, im.Backing))
			dry, err := Writeback(dev, back, r, WritebackOptions{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if st := back.Stats(); st.Writes != 0 || st.Syncs != 0 {
				t.Fatalf("the dry run wrote %d times and synced %d", st.Writes, st.Syncs)
			}
			res, err := Writeback(dev, back, r, WritebackOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if dry.Blocks != res.Blocks || dry.Sectors != res.Sectors || dry.Writes != res.Writes || res.Writes == 0 {
				t.Fatalf("dry run %+v, writeback %+v", dry, res)
			}
			if st := back.Stats(); st.Writes != int64(res.Writes) {
				t.Fatalf("writeback reports %d writes, the backing device saw %d", res.Writes, st.Writes)
			}
		})
	}
}
