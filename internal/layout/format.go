// Package layout owns the cache device's on-disk format: the layout of
// dm-writeboost 2.x (the device-mapper target, version 2.2.x), byte for byte.
// It does no I/O and starts no goroutines; everything here is encoding,
// decoding and arithmetic. The specification is docs/format.md; the C
// original is dm-writeboost's src/dm-writeboost.h.
//
// The cache device:
//
//	byte 0               1 MiB                1 MiB + 512 KiB
//	| superblock (1 MiB) | segment 0 (512 KiB) | segment 1 | ... | segment n-1 | tail (unused)
//
//	nr_segments = (device_sectors - 2048) / 1024
//	segment index k starts at sector 2048 + 1024*k
//	segment id N (ids start at 1, only grow) lives at index (N-1) mod nr_segments
//
// Superblock (sectors 0..2047), everything not named here is zero:
//
//	sector 0,    bytes 0-3: magic u32 = 0x57427374 ("WBst")
//	sector 2047, bytes 0-7: last_writeback_segment_id u64 (the superblock record)
//
// Segment (1024 sectors = 128 cache blocks): block 0 is the header, blocks
// 1..127 hold data; data slot i (0 <= i < 127) is at byte 4096*(i+1).
//
// Segment header (4096 bytes), cf. struct segment_header_device:
//
//	0       8        12       13                512                       2544     4096
//	+-------+--------+--------+-----------------+--------------------------+--------+
//	| id    |checksum| length | zero            | metablock[0..126] (16 B) | zero   |
//	| u64   | u32    | u8     |                 |                          |        |
//	+-------+--------+--------+-----------------+--------------------------+--------+
//
// Metablock (16 bytes), cf. struct metablock_device:
//
//	0        8           9        16
//	+--------+-----------+--------+
//	| sector | dirty_bits| zero   |
//	| u64    | u8        |        |
//	+--------+-----------+--------+
//
// checksum = CRC-32C of the segment's bytes [512, 4096 + 4096*length): the
// metablock area and the length data slots, not the first 512 bytes.
//
// All integers are little-endian.
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Sizes and offsets. Part of the on-disk format; never change.
const (
	SectorShift     = 9
	SectorSize      = 1 << SectorShift // 512 bytes
	BlockShift      = 12
	BlockSize       = 1 << BlockShift // 4096 bytes: a cache block
	SectorsPerBlock = BlockSize / SectorSize

	SuperblockSectors = 2048 // the superblock area: 1 MiB
	SuperblockSize    = SuperblockSectors * SectorSize

	SegmentSectors   = 1024 // 512 KiB
	SegmentSize      = SegmentSectors * SectorSize
	BlocksPerSegment = SegmentSize / BlockSize // 128: one header + 127 data
	// NrCachesPerSegment is the number of data slots (and metablocks) of a
	// segment, cf. NR_CACHES_INSEG.
	NrCachesPerSegment = BlocksPerSegment - 1

	// MinDeviceSize is the smallest cache device: the superblock and one segment.
	MinDeviceSize = SuperblockSize + SegmentSize

	// Magic marks a formatted device (sector 0, bytes 0-3), cf. WB_MAGIC.
	Magic uint32 = 0x57427374

	// SuperRecordSector holds last_writeback_segment_id.
	SuperRecordSector = SuperblockSectors - 1
	SuperRecordOffset = SuperRecordSector * SectorSize // 1048064

	HeaderSize       = BlockSize // segment header: 4096 bytes
	MetablockSize    = 16
	MetablocksOffset = 512 // metablock i at 512 + 16*i
	// ChecksumOffset is where the checksummed bytes of a segment start.
	ChecksumOffset = MetablocksOffset

	idOffset       = 0
	checksumOffset = 8
	lengthOffset   = 12

	mbSectorOffset    = 0
	mbDirtyBitsOffset = 8

	// DirtyFull marks a metablock whose 8 sectors are all dirty.
	DirtyFull uint8 = 0xFF
)

// Errors. ErrCorrupt marks every decoding failure caused by the bytes read;
// test it with errors.Is.
var (
	ErrCorrupt    = errors.New("layout: corrupt")
	ErrTooSmall   = errors.New("layout: device too small for a cache (needs at least 1 MiB + 512 KiB)")
	ErrShortInput = errors.New("layout: buffer too short")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C of p as the kernel computes it
// (~crc32c(~0, p)); Go's IEEE-style finalisation gives exactly that value.
func Checksum(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// UpdateChecksum continues a running Checksum with more bytes, so a segment
// whose header and data live in separate buffers is summed without a copy.
func UpdateChecksum(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }

// SegmentChecksum computes the checksum of a whole in-memory segment image
// seg (at least 4096*(length+1) bytes), the way the header records it.
func SegmentChecksum(seg []byte, length uint8) (uint32, error) {
	end := HeaderSize + BlockSize*int(length)
	if int(length) > NrCachesPerSegment {
		return 0, fmt.Errorf("%w: segment length %d > %d", ErrCorrupt, length, NrCachesPerSegment)
	}
	if len(seg) < end {
		return 0, fmt.Errorf("%w: segment image of %d bytes, need %d", ErrShortInput, len(seg), end)
	}
	return Checksum(seg[ChecksumOffset:end]), nil
}

// Geometry is the arithmetic of one cache device.
type Geometry struct {
	DeviceSize int64  // bytes
	NrSegments uint64 // segments in the ring
}

// NewGeometry returns the geometry of a cache device of size bytes.
func NewGeometry(size int64) (Geometry, error) {
	if size < MinDeviceSize {
		return Geometry{}, fmt.Errorf("%w: %d bytes", ErrTooSmall, size)
	}
	sectors := uint64(size) >> SectorShift
	return Geometry{DeviceSize: size, NrSegments: (sectors - SuperblockSectors) / SegmentSectors}, nil
}

// NrCacheBlocks is the number of data slots in the ring.
func (g Geometry) NrCacheBlocks() uint64 { return g.NrSegments * NrCachesPerSegment }

// UsableBytes is the data capacity of the ring.
func (g Geometry) UsableBytes() int64 { return int64(g.NrCacheBlocks()) * BlockSize }

// SlotOf returns the ring index of segment id (id >= 1).
func (g Geometry) SlotOf(id uint64) uint64 { return (id - 1) % g.NrSegments }

// SegmentOffset returns the byte offset of ring index slot.
func (g Geometry) SegmentOffset(slot uint64) int64 {
	return SuperblockSize + int64(slot)*SegmentSize
}

// DataOffset returns the byte offset of data slot i (0 <= i < 127) of ring
// index slot.
func (g Geometry) DataOffset(slot uint64, i int) int64 {
	return g.SegmentOffset(slot) + int64(i+1)*BlockSize
}

// EncodeMagic fills sector (at least 512 bytes) as sector 0 of a formatted device.
func EncodeMagic(sector []byte) {
	clear(sector[:SectorSize])
	binary.LittleEndian.PutUint32(sector, Magic)
}

// IsFormatted reports whether sector 0 starts with the magic.
func IsFormatted(sector0 []byte) bool {
	return len(sector0) >= 4 && binary.LittleEndian.Uint32(sector0) == Magic
}

// SuperRecord is the superblock record (sector 2047), cf.
// struct superblock_record_device.
type SuperRecord struct {
	LastWritebackSegmentID uint64
}

// Encode fills sector (512 bytes) with the record; the rest is zero.
func (r SuperRecord) Encode(sector []byte) {
	clear(sector[:SectorSize])
	binary.LittleEndian.PutUint64(sector, r.LastWritebackSegmentID)
}

// DecodeSuperRecord reads the record from its sector.
func DecodeSuperRecord(sector []byte) (SuperRecord, error) {
	if len(sector) < 8 {
		return SuperRecord{}, fmt.Errorf("%w: superblock record of %d bytes", ErrShortInput, len(sector))
	}
	return SuperRecord{LastWritebackSegmentID: binary.LittleEndian.Uint64(sector)}, nil
}

// Metablock describes one data slot, cf. struct metablock_device.
type Metablock struct {
	Sector    uint64 // backing sector of the cache block, a multiple of 8
	DirtyBits uint8  // bit j: sector j holds data not yet on the backing device
}

// SegmentHeader is the decoded first block of a segment, cf.
// struct segment_header_device.
type SegmentHeader struct {
	ID         uint64
	Checksum   uint32
	Length     uint8 // valid metablocks and data slots, 0..127
	Metablocks [NrCachesPerSegment]Metablock
	// HasDurable tells a header with writeboost's durable record (bytes
	// 4064-4095, ext.go) from one without: the kernel target's, one of a
	// record version this build does not read, or one whose record names
	// the segment's own id or a later one, which vouches for nothing.
	// Durable is its durable_id.
	HasDurable bool
	Durable    uint64
}

// Encode writes h into buf (at least 4096 bytes); bytes not part of a field
// are zeroed. Metablocks past Length are written as they are in h: callers
// keep them zero.
func (h *SegmentHeader) Encode(buf []byte) {
	buf = buf[:HeaderSize]
	clear(buf)
	binary.LittleEndian.PutUint64(buf[idOffset:], h.ID)
	binary.LittleEndian.PutUint32(buf[checksumOffset:], h.Checksum)
	buf[lengthOffset] = h.Length
	for i := range h.Metablocks {
		h.Metablocks[i].encode(buf[MetablocksOffset+MetablockSize*i:])
	}
	if h.HasDurable {
		PutDurableRecord(buf, h.Durable)
	}
}

func (m Metablock) encode(b []byte) {
	binary.LittleEndian.PutUint64(b[mbSectorOffset:], m.Sector)
	b[mbDirtyBitsOffset] = m.DirtyBits
}

// PutMetablock encodes metablock i into an encoded header in place.
func PutMetablock(header []byte, i int, m Metablock) {
	m.encode(header[MetablocksOffset+MetablockSize*i:])
}

// MetablockAt decodes metablock i of an encoded header.
func MetablockAt(header []byte, i int) Metablock {
	b := header[MetablocksOffset+MetablockSize*i:]
	return Metablock{Sector: binary.LittleEndian.Uint64(b[mbSectorOffset:]), DirtyBits: b[mbDirtyBitsOffset]}
}

// PutFirstSector encodes id, checksum and length into an encoded header in
// place: the three fields that must reach the device atomically.
func PutFirstSector(header []byte, id uint64, checksum uint32, length uint8) {
	binary.LittleEndian.PutUint64(header[idOffset:], id)
	binary.LittleEndian.PutUint32(header[checksumOffset:], checksum)
	header[lengthOffset] = length
}

// DecodeSegmentHeader decodes a 4096-byte segment header. It fails with
// ErrCorrupt only where the bytes cannot describe a segment at all (length
// over 127); checks that need context (slot, checksum, metablock sectors)
// are the caller's.
func DecodeSegmentHeader(buf []byte) (SegmentHeader, error) {
	var h SegmentHeader
	if len(buf) < HeaderSize {
		return h, fmt.Errorf("%w: segment header of %d bytes", ErrShortInput, len(buf))
	}
	h.ID = binary.LittleEndian.Uint64(buf[idOffset:])
	h.Checksum = binary.LittleEndian.Uint32(buf[checksumOffset:])
	h.Length = buf[lengthOffset]
	for i := range h.Metablocks {
		h.Metablocks[i] = MetablockAt(buf, i)
	}
	if d, ok := DurableRecordAt(buf); ok && d < h.ID {
		h.Durable, h.HasDurable = d, true
	}
	if int(h.Length) > NrCachesPerSegment {
		return h, fmt.Errorf("%w: segment %d has length %d > %d", ErrCorrupt, h.ID, h.Length, NrCachesPerSegment)
	}
	return h, nil
}

// HeaderID reads only the id of an encoded header.
func HeaderID(buf []byte) uint64 { return binary.LittleEndian.Uint64(buf[idOffset:]) }
