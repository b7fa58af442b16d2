// Package testimg generates cache device images for tests: the fixtures of
// wb-check's tests and of the engine's compatibility tests.
//
// NB: the encoder here is written from docs/format.md directly, with its
// own constants and its own CRC-32C, and imports neither internal/layout nor
// internal/replay nor the engine: an image it writes is a second opinion on
// the format, not a copy of the code under test.
//
// The generator runs a seeded random workload the way dm-writeboost's write
// path shapes the log: full writes (dirty_bits 255), partial writes (only the
// written sectors' bits set, garbage in the other sectors of the slot),
// read-cached clean blocks (dirty_bits 0), partial flushes (segments shorter
// than 127 blocks, some empty), a ring that wraps with every segment written
// back before its slot is reused, a writeback daemon that runs behind, and a
// superblock record that lags the writeback. It models the backing device as
// the kernel leaves it at a power cut, and returns the expected volume: what
// the backing device holds after a full writeback, byte for byte.
package testimg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
)

// The format, from docs/format.md.
const (
	sectorSize      = 512
	blockSize       = 4096
	sectorsPerBlock = 8
	superSize       = 1 << 20   // superblock area
	segSize         = 512 << 10 // one segment
	nrCaches        = 127       // data slots per segment
	magic           = 0x57427374
	recordOffset    = 2047 * sectorSize // last_writeback_segment_id
	mbOffset        = 512               // metablock i at 512 + 16*i
	mbSize          = 16
	checksumFrom    = 512 // the checksum covers [512, 4096 + 4096*length)

	// tornWindow is how many segments may be in flight at a power cut
	// for a writer without durable records (the kernel target's, which
	// this generator plays except in the variants with records).
	tornWindow = 8
	// The durable record (docs/format.md "Durable record"): in a segment
	// header at byte 4064, inside the checksummed bytes.
	durableOffset = 4064
	durableMagic  = 0x57426472
	// wbLag keeps the writeback daemon this many segments behind the
	// newest, so that damage placed in the last segments never hits a
	// segment already written back.
	wbLag = 12
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Damage selects a damaged variant of an image.
type Damage int

const (
	// Clean: every segment whole.
	Clean Damage = iota
	// TornNewest: the newest segment's header was written but only part of
	// its data (a power cut): replay discards it safely.
	TornNewest
	// TornTail: the segment two before the newest is torn, the two newer
	// in-flight segments are whole: still a torn tail.
	TornTail
	// MidLogCorruption: a segment with more than tornWindow whole segments
	// after it has a bad checksum: data loss.
	MidLogCorruption
	// WrongSlot: a mid-log segment carries an id that belongs to another slot.
	WrongSlot
	// Unformatted: a cache whose sector 0 was zeroed (the documented way to
	// ask for a reformat).
	Unformatted
	// GarbageMagic: random bytes everywhere, with a valid magic.
	GarbageMagic
	// Truncated: the file cut in the middle of the ring (needs a wrapped ring).
	Truncated
	// TruncatedSmall: the file cut below 1 MiB + 512 KiB.
	TruncatedSmall
	// TornInFlight: a writer with durable records and a wide flight
	// window; the segment ten before the newest is torn and the newer ones,
	// whole, record only segments before it as durable: a torn tail,
	// though whole segments lie more than tornWindow beyond it.
	TornInFlight
	// DurableCorruption: a writer with durable records; the segment three
	// before the newest fails its checksum and the next one records it
	// durable: damage, though no whole segment lies tornWindow beyond it.
	DurableCorruption
)

var damageNames = [...]string{"clean", "torn-newest", "torn-tail", "mid-log-corruption", "wrong-slot",
	"unformatted", "garbage-magic", "truncated", "truncated-small", "torn-in-flight", "durable-corruption"}

func (d Damage) String() string {
	if d >= 0 && int(d) < len(damageNames) {
		return damageNames[d]
	}
	return fmt.Sprintf("damage(%d)", int(d))
}

// Damages lists every variant, Clean first.
func Damages() []Damage {
	ds := make([]Damage, len(damageNames))
	for i := range ds {
		ds[i] = Damage(i)
	}
	return ds
}

// Config describes the image to generate.
type Config struct {
	Seed          uint64
	NrSegments    uint64 // segments in the ring; at least 16 for the damaged variants
	TailBytes     int64  // unused bytes after the ring, < 512 KiB
	BackingBlocks uint64 // backing device size in 4 KiB blocks
	Segments      uint64 // segments the workload seals: ids 1..Segments; > NrSegments wraps the ring
	Damage        Damage
}

// Image is what Write generated and what a correct reader must find in it.
type Image struct {
	Config    Config
	CacheSize int64  // bytes of the cache image file
	Backing   []byte // the backing device at the power cut
	// Expected is the volume: the backing device after a full writeback
	// of the valid log, byte for byte. For MidLogCorruption it is what the
	// valid prefix holds (a forced writeback's result). Nil where a reader
	// must refuse (WrongSlot, Unformatted, GarbageMagic, Truncated*).
	Expected []byte

	Formatted       bool
	SuperRecord     uint64 // last_writeback_segment_id as written
	MaxID           uint64 // largest id in any header
	LastFlushedID   uint64 // id of the last valid segment
	LastWritebackID uint64 // max(LastFlushedID - NrSegments, SuperRecord) capped at LastFlushedID
	ValidSegments   int    // segments in the valid prefix of the walk
	NrDirtyBlocks   int    // cache blocks holding a dirty sector after replay
	BadID           uint64 // id of the torn or corrupt segment, 0 if none
	WrongSlotID     uint64 // WrongSlot: the id written in the wrong slot
}

// WriteBacking writes the backing device at the power cut to path.
func (im *Image) WriteBacking(path string) error {
	if err := os.WriteFile(path, im.Backing, 0o644); err != nil {
		return fmt.Errorf("testimg: write backing: %w", err)
	}
	return nil
}

// entry is the newest copy of one cache block, as the kernel's hash table
// holds it at run time.
type entry struct {
	id    uint64
	idx   int
	mask  uint8 // dirty_bits as written in the metablock
	dirty bool  // not yet written back (at run time)
}

type metablock struct {
	block uint64
	mask  uint8
}

type gen struct {
	cfg  Config
	rng  *rand.Rand    // the workload's decisions
	data *rand.ChaCha8 // the bytes written (fast, even under -race)
	f    *os.File
	vol  []byte // what the volume reads now
	back []byte // what the backing device holds now
	hash map[uint64]entry
	segs map[uint64][]metablock // metablocks of the segments still in the ring
	wbID uint64                 // every segment up to this id is written back
	// cut is the first segment lost to the damage (torn or corrupt), 0 for
	// none; segments from cut on never touch a block whose newest copy is
	// at or after cut (the kernel waits for a segment to be durable
	// before it writes back a copy from it).
	cut uint64
	// at the cut: the state a reader must recover
	snapVol  []byte
	snapHash map[uint64]entry
}

// Write generates the image described by cfg into the file cachePath
// (created or truncated) and returns the image's facts.
func Write(cachePath string, cfg Config) (*Image, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f, err := os.Create(cachePath)
	if err != nil {
		return nil, fmt.Errorf("testimg: %w", err)
	}
	im, err := generate(f, cfg)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("testimg: %w", cerr)
	}
	if err != nil {
		return nil, err
	}
	return im, nil
}

func (c Config) validate() error {
	switch {
	case c.NrSegments < 1:
		return errors.New("testimg: NrSegments must be >= 1")
	case c.TailBytes < 0 || c.TailBytes >= segSize:
		return errors.New("testimg: TailBytes must be in [0, 512 KiB)")
	case c.BackingBlocks < 1:
		return errors.New("testimg: BackingBlocks must be >= 1")
	case c.Damage < Clean || int(c.Damage) >= len(damageNames):
		return fmt.Errorf("testimg: unknown damage %d", int(c.Damage))
	}
	needsLog := c.Damage == TornNewest || c.Damage == TornTail || c.Damage == MidLogCorruption || c.Damage == WrongSlot ||
		c.Damage == TornInFlight || c.Damage == DurableCorruption
	if needsLog && (c.NrSegments < 16 || c.Segments < 16) {
		return fmt.Errorf("testimg: %v needs NrSegments and Segments >= 16", c.Damage)
	}
	if c.Damage == Truncated && (c.NrSegments < 4 || c.Segments <= c.NrSegments) {
		return errors.New("testimg: truncated needs a wrapped ring (Segments > NrSegments >= 4)")
	}
	return nil
}

func generate(f *os.File, cfg Config) (*Image, error) {
	size := int64(superSize) + int64(cfg.NrSegments)*segSize + cfg.TailBytes
	if err := f.Truncate(size); err != nil {
		return nil, fmt.Errorf("testimg: size cache image: %w", err)
	}
	g := &gen{
		cfg:  cfg,
		rng:  rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		data: rand.NewChaCha8(chachaSeed(cfg.Seed)),
		f:    f,
		hash: make(map[uint64]entry),
		segs: make(map[uint64][]metablock),
	}
	im := &Image{Config: cfg, CacheSize: size}
	if cfg.Damage == GarbageMagic {
		return im, g.garbage(im, size)
	}
	g.back = make([]byte, cfg.BackingBlocks*blockSize)
	g.fill(g.back)
	g.vol = append([]byte(nil), g.back...)
	switch cfg.Damage {
	case TornNewest:
		g.cut = cfg.Segments
	case TornTail:
		g.cut = cfg.Segments - 2
	case MidLogCorruption:
		g.cut = cfg.Segments - tornWindow - 1
	case TornInFlight:
		g.cut = cfg.Segments - 10
	case DurableCorruption:
		g.cut = cfg.Segments - 3
	}
	for id := uint64(1); id <= cfg.Segments; id++ {
		if id == g.cut {
			g.snapVol = append([]byte(nil), g.vol...)
			g.snapHash = make(map[uint64]entry, len(g.hash))
			for k, v := range g.hash {
				g.snapHash[k] = v
			}
		}
		if err := g.segment(id); err != nil {
			return nil, err
		}
	}
	im.Backing = g.back
	// The superblock record lags the writeback daemon (it is updated now
	// and then): never above what was written back.
	switch g.rng.IntN(3) {
	case 0:
		im.SuperRecord = g.wbID
	case 1:
		if g.wbID > 0 {
			im.SuperRecord = g.rng.Uint64N(g.wbID + 1)
		}
	}
	var sb [sectorSize]byte
	binary.LittleEndian.PutUint64(sb[:], im.SuperRecord)
	if _, err := f.WriteAt(sb[:], recordOffset); err != nil {
		return nil, fmt.Errorf("testimg: write superblock record: %w", err)
	}
	clear(sb[:])
	binary.LittleEndian.PutUint32(sb[:], magic)
	if _, err := f.WriteAt(sb[:], 0); err != nil {
		return nil, fmt.Errorf("testimg: write magic: %w", err)
	}
	im.Formatted = true
	im.MaxID = cfg.Segments

	last := cfg.Segments // the newest id whose header reached the device
	vol, hash := g.vol, g.hash
	flushed := last
	if g.cut != 0 {
		vol, hash, flushed = g.snapVol, g.snapHash, g.cut-1
		im.BadID = g.cut
	}
	im.LastFlushedID = flushed
	im.Expected = vol
	lwb := im.SuperRecord
	if flushed > cfg.NrSegments {
		lwb = max(lwb, flushed-cfg.NrSegments)
	}
	im.LastWritebackID = min(lwb, flushed)
	oldest := uint64(1) // the oldest id still in the ring
	if last > cfg.NrSegments {
		oldest = last - cfg.NrSegments + 1
	}
	if flushed >= oldest {
		im.ValidSegments = int(flushed - oldest + 1)
	}
	for _, e := range hash {
		if e.id >= oldest && e.id > im.LastWritebackID && e.mask != 0 {
			im.NrDirtyBlocks++
		}
	}
	return im, g.damage(im)
}

// fill fills p with random bytes.
func (g *gen) fill(p []byte) { g.data.Read(p) }

func chachaSeed(seed uint64) (s [32]byte) {
	binary.LittleEndian.PutUint64(s[:], seed)
	copy(s[8:], "writeboost testimg")
	return s
}

// writeback writes back every segment up to id, in id order, as the
// writeback daemon does: the newest copy of each block, its dirty sectors
// only. A copy already replaced was written back when it was replaced or
// is superseded entirely.
func (g *gen) writeback(id uint64) {
	for ; g.wbID < id; g.wbID++ {
		s := g.wbID + 1
		for i, mb := range g.segs[s] {
			e, ok := g.hash[mb.block]
			if !ok || e.id != s || e.idx != i || !e.dirty {
				continue
			}
			g.writebackSectors(mb.block, e.mask)
			e.dirty = false
			g.hash[mb.block] = e
		}
	}
}

// writebackSectors copies the sectors of block in mask from the volume to
// the backing device. The newest copy's dirty sectors are what the volume
// reads, so the volume is the data source.
func (g *gen) writebackSectors(block uint64, mask uint8) {
	for j := range sectorsPerBlock {
		if mask&(1<<j) != 0 {
			off := block*blockSize + uint64(j)*sectorSize
			copy(g.back[off:off+sectorSize], g.vol[off:off+sectorSize])
		}
	}
}

// segment builds, and writes, the segment with this id.
func (g *gen) segment(id uint64) error {
	nr := g.cfg.NrSegments
	// The ring rule: the segment that used this slot is written back
	// before the slot is reused, and leaves the hash table.
	if id > nr {
		old := id - nr
		g.writeback(old)
		for i, mb := range g.segs[old] {
			if e, ok := g.hash[mb.block]; ok && e.id == old && e.idx == i {
				delete(g.hash, mb.block)
			}
		}
		delete(g.segs, old)
	}
	// The writeback daemon, running behind.
	if id > wbLag && g.rng.IntN(4) == 0 {
		target := g.wbID + 1 + g.rng.Uint64N(8)
		g.writeback(min(target, id-wbLag))
	}

	var length int
	switch r := g.rng.IntN(20); {
	case r < 11:
		length = nrCaches
	case r < 19:
		length = 1 + g.rng.IntN(nrCaches-1) // a partial flush
	default:
		length = 0 // a flush with nothing to seal but the id
	}
	if g.cut != 0 && id >= g.cut && length < 2 {
		length = 2 // the torn or corrupt segment needs data to tear
	}
	length = min(length, int(g.cfg.BackingBlocks))

	buf := make([]byte, blockSize*(1+length))
	mbs := make([]metablock, 0, length)
	inSeg := make(map[uint64]bool, length)
	for tries := 0; len(mbs) < length && tries < 50*nrCaches; tries++ {
		block := g.rng.Uint64N(g.cfg.BackingBlocks)
		if inSeg[block] {
			continue
		}
		e, cached := g.hash[block]
		if g.cut != 0 && id >= g.cut && cached && e.id >= g.cut {
			continue
		}
		i := len(mbs)
		slot := buf[blockSize*(i+1) : blockSize*(i+2)]
		var mask uint8
		switch r := g.rng.IntN(20); {
		case r < 11:
			mask = 0xff
		case r < 16:
			mask = uint8(1 + g.rng.IntN(254))
		default:
			mask = 0 // read cache
		}
		if mask == 0 && cached && e.dirty {
			mask = 0xff // a dirty block is a read hit: no read-cache copy
		}
		if mask == 0xff && cached && e.dirty && g.cut != 0 && id >= g.cut {
			// NB: a full overwrite drops the older dirty copy without
			// writing it back; if the overwrite is then lost with the
			// damage, so is the older copy once its slot is reused. Keep
			// the lost segments partial over dirty blocks, so the valid
			// prefix still tells the whole volume.
			mask = uint8(1 + g.rng.IntN(254))
		}
		if mask == 0 {
			// A read-cached block: the volume's data, clean.
			copy(slot, g.vol[block*blockSize:(block+1)*blockSize])
		} else {
			g.fill(slot) // the written sectors, and garbage in the others
			if cached && e.dirty && mask != 0xff {
				// cf. invalidate_previous_cache: the older dirty copy
				// goes to the backing device before a partial overwrite.
				g.writebackSectors(block, e.mask)
			}
			for j := range sectorsPerBlock {
				if mask&(1<<j) != 0 {
					off := block*blockSize + uint64(j)*sectorSize
					copy(g.vol[off:off+sectorSize], slot[j*sectorSize:(j+1)*sectorSize])
				}
			}
		}
		inSeg[block] = true
		g.hash[block] = entry{id: id, idx: i, mask: mask, dirty: mask != 0}
		mbs = append(mbs, metablock{block: block, mask: mask})
		binary.LittleEndian.PutUint64(buf[mbOffset+mbSize*i:], block*sectorsPerBlock)
		buf[mbOffset+mbSize*i+8] = mask
	}
	length = len(mbs)
	if id == g.cut && length < 2 {
		return fmt.Errorf("testimg: segment %d to damage got %d blocks, needs 2: more BackingBlocks", id, length)
	}
	if durable, ok := g.durable(id); ok {
		binary.LittleEndian.PutUint32(buf[durableOffset:], durableMagic)
		binary.LittleEndian.PutUint16(buf[durableOffset+4:], 1)
		binary.LittleEndian.PutUint64(buf[durableOffset+8:], durable)
	}
	buf = buf[:blockSize*(1+length)]
	binary.LittleEndian.PutUint64(buf[0:], id)
	buf[12] = uint8(length)
	binary.LittleEndian.PutUint32(buf[8:], crc32.Checksum(buf[checksumFrom:], castagnoli))
	g.segs[id] = mbs

	off := int64(superSize) + int64((id-1)%nr)*segSize
	if id == g.cut && (g.cfg.Damage == TornNewest || g.cfg.Damage == TornTail || g.cfg.Damage == TornInFlight) {
		// A power cut: the header and the first data blocks reached the
		// device, the rest of the slot still holds the older segment.
		buf = buf[:blockSize*(1+length/2)]
	}
	if _, err := g.f.WriteAt(buf, off); err != nil {
		return fmt.Errorf("testimg: write segment %d: %w", id, err)
	}
	return nil
}

// durable is the durable record of segment id, for the variants whose
// writer keeps one: the segment before it was durable when it was written,
// except for the segments in flight with a torn one (TornInFlight), written
// while only the segments before the torn one were durable.
func (g *gen) durable(id uint64) (uint64, bool) {
	switch g.cfg.Damage {
	case TornInFlight:
		if id > g.cut {
			return g.cut - 1, true
		}
		return id - 1, true
	case DurableCorruption:
		return id - 1, true
	}
	return 0, false
}

// damage applies the variants that touch an image after the workload.
func (g *gen) damage(im *Image) error {
	cfg := g.cfg
	nr := cfg.NrSegments
	segOff := func(id uint64) int64 { return int64(superSize) + int64((id-1)%nr)*segSize }
	switch cfg.Damage {
	case MidLogCorruption, DurableCorruption:
		// Flip one byte of the first data block: the checksum fails.
		var b [1]byte
		off := segOff(g.cut) + blockSize + int64(g.rng.IntN(blockSize))
		if _, err := g.f.ReadAt(b[:], off); err != nil {
			return fmt.Errorf("testimg: corrupt segment %d: %w", g.cut, err)
		}
		b[0] ^= 0x5a
		if _, err := g.f.WriteAt(b[:], off); err != nil {
			return fmt.Errorf("testimg: corrupt segment %d: %w", g.cut, err)
		}
	case WrongSlot:
		// The id is outside the checksummed bytes: the checksum still
		// matches, only the slot tells the fault.
		victim := cfg.Segments - 5
		im.WrongSlotID = victim - 1
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], im.WrongSlotID)
		if _, err := g.f.WriteAt(b[:], segOff(victim)); err != nil {
			return fmt.Errorf("testimg: rewrite id of segment %d: %w", victim, err)
		}
		im.Expected = nil
	case Unformatted:
		var s [sectorSize]byte
		if _, err := g.f.WriteAt(s[:], 0); err != nil {
			return fmt.Errorf("testimg: zero sector 0: %w", err)
		}
		im.Formatted, im.Expected = false, nil
	case Truncated:
		// NB: nr/2+1 segments, not nr/2: a ring cut to a divisor of its
		// size keeps every id in its slot.
		im.CacheSize = int64(superSize) + int64(nr/2+1)*segSize + 3*blockSize
		im.Expected = nil
	case TruncatedSmall:
		im.CacheSize = superSize + 100<<10
		im.Formatted, im.Expected = false, nil
	}
	if im.CacheSize != int64(superSize)+int64(nr)*segSize+cfg.TailBytes {
		if err := g.f.Truncate(im.CacheSize); err != nil {
			return fmt.Errorf("testimg: truncate: %w", err)
		}
	}
	return nil
}

// garbage writes random bytes everywhere and a valid magic in sector 0.
func (g *gen) garbage(im *Image, size int64) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		g.fill(buf)
		n := min(int64(len(buf)), size-off)
		if off == 0 {
			binary.LittleEndian.PutUint32(buf, magic)
		}
		if _, err := g.f.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("testimg: write garbage: %w", err)
		}
	}
	im.Formatted = true
	im.Backing = make([]byte, g.cfg.BackingBlocks*blockSize)
	return nil
}
