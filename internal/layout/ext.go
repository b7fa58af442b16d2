package layout

import (
	"encoding/binary"
	"fmt"
)

// Extension records: what writeboost adds in superblock bytes the kernel
// target neither reads nor writes (docs/format.md "Extension records").
// The kernel formats by zeroing the whole first MiB, and every kernel
// superblock record update writes the 4 KiB block of sectors 2040-2047
// (zeros, then the record in sector 2047); it touches nothing else.
//
// Clean-stop record, sector 2040 (byte 1044480), in the kernel's record
// block, so that any kernel record update clears it:
//
//	0      4        6      8         16       20          512
//	| magic | version | zero | last_id | crc32c | zero      |
//	| u32   | u16 = 1 |      | u64     | u32    |           |
//
// crc32c covers bytes 0-15. last_id: every segment of the ring walk with an
// id up to last_id was whole and durable when the engine stopped cleanly.
//
// Binding record, sector 8 (byte 4096), outside both kernel writes, so only
// a format clears it:
//
//	0      4        6              8        12     24                 24+len  512
//	| magic | version | payload len | crc32c | zero | payload (JSON)  | zero |
//	| u32   | u16 = 1 | u16 <= 488  | u32    |      |                 |      |
//
// crc32c covers the payload, a UTF-8 JSON object naming the backing device
// the cache belongs to (internal/superblock.Binding).
//
// Durable record, in a segment header at byte 4064, past the metablocks:
// bytes the kernel target writes as zeros and never reads, but inside the
// segment checksum, which is all that vouches for it:
//
//	0      4        6      8            16     32
//	| magic | version | zero | durable_id | zero |
//	| u32   | u16 = 1 |      | u64        |      |
//
// durable_id: every segment with an id up to it was durable (synced) on the
// cache device before this segment was written; always below the
// segment's own id. Replay uses it to tell a torn tail from damage
// (internal/replay, docs/format.md "Replay").
//
// Part of the on-disk format; never change.
const (
	CleanStopSector = 2040
	CleanStopOffset = CleanStopSector * SectorSize // 1044480
	CleanStopMagic  = uint32(0x57426373)
	CleanStopV1     = 1

	BindingSector     = 8
	BindingOffset     = BindingSector * SectorSize // 4096
	BindingMagic      = uint32(0x57426264)
	BindingV1         = 1
	bindingHeaderSize = 24
	// MaxBindingPayload is the largest binding payload a sector holds.
	MaxBindingPayload = SectorSize - bindingHeaderSize

	// DurableRecordOffset is where a segment header holds the durable
	// record (32 bytes).
	DurableRecordOffset = HeaderSize - 32
	DurableMagic        = uint32(0x57426472)
	DurableV1           = 1

	// RecordBlockOffset is the 4 KiB block the kernel rewrites on every
	// superblock record update: sectors 2040-2047, the clean-stop record
	// first, the superblock record last.
	RecordBlockOffset = SuperblockSize - BlockSize
)

// CleanStop is the clean-stop record.
type CleanStop struct {
	LastID uint64
}

// Encode fills sector (512 bytes) with the record.
func (c CleanStop) Encode(sector []byte) {
	clear(sector[:SectorSize])
	binary.LittleEndian.PutUint32(sector[0:], CleanStopMagic)
	binary.LittleEndian.PutUint16(sector[4:], CleanStopV1)
	binary.LittleEndian.PutUint64(sector[8:], c.LastID)
	binary.LittleEndian.PutUint32(sector[16:], Checksum(sector[:16]))
}

// DecodeCleanStop reads the clean-stop record from its sector. No magic:
// ok false and no error (none was written, or something cleared it). A
// magic with a wrong version or checksum is ErrCorrupt.
func DecodeCleanStop(sector []byte) (c CleanStop, ok bool, err error) {
	if len(sector) < SectorSize {
		return c, false, fmt.Errorf("%w: clean-stop record of %d bytes", ErrShortInput, len(sector))
	}
	if binary.LittleEndian.Uint32(sector) != CleanStopMagic {
		return c, false, nil
	}
	if v := binary.LittleEndian.Uint16(sector[4:]); v != CleanStopV1 {
		return c, false, fmt.Errorf("%w: clean-stop record version %d (this build reads %d)", ErrCorrupt, v, CleanStopV1)
	}
	if sum := binary.LittleEndian.Uint32(sector[16:]); sum != Checksum(sector[:16]) {
		return c, false, fmt.Errorf("%w: clean-stop record checksum %#08x, want %#08x", ErrCorrupt, sum, Checksum(sector[:16]))
	}
	return CleanStop{LastID: binary.LittleEndian.Uint64(sector[8:])}, true, nil
}

// EncodeBinding fills sector (512 bytes) with a binding record carrying
// payload (at most MaxBindingPayload bytes).
func EncodeBinding(sector, payload []byte) error {
	if len(payload) == 0 || len(payload) > MaxBindingPayload {
		return fmt.Errorf("layout: binding payload of %d bytes (1..%d)", len(payload), MaxBindingPayload)
	}
	clear(sector[:SectorSize])
	binary.LittleEndian.PutUint32(sector[0:], BindingMagic)
	binary.LittleEndian.PutUint16(sector[4:], BindingV1)
	binary.LittleEndian.PutUint16(sector[6:], uint16(len(payload)))
	binary.LittleEndian.PutUint32(sector[8:], Checksum(payload))
	copy(sector[bindingHeaderSize:], payload)
	return nil
}

// DecodeBinding returns the payload of the binding record in sector. No
// magic: ok false and no error. A magic with a wrong version, length or
// checksum is ErrCorrupt.
func DecodeBinding(sector []byte) (payload []byte, ok bool, err error) {
	if len(sector) < SectorSize {
		return nil, false, fmt.Errorf("%w: binding record of %d bytes", ErrShortInput, len(sector))
	}
	if binary.LittleEndian.Uint32(sector) != BindingMagic {
		return nil, false, nil
	}
	if v := binary.LittleEndian.Uint16(sector[4:]); v != BindingV1 {
		return nil, false, fmt.Errorf("%w: binding record version %d (this build reads %d)", ErrCorrupt, v, BindingV1)
	}
	n := int(binary.LittleEndian.Uint16(sector[6:]))
	if n == 0 || n > MaxBindingPayload {
		return nil, false, fmt.Errorf("%w: binding record payload of %d bytes (1..%d)", ErrCorrupt, n, MaxBindingPayload)
	}
	p := sector[bindingHeaderSize : bindingHeaderSize+n]
	if sum := binary.LittleEndian.Uint32(sector[8:]); sum != Checksum(p) {
		return nil, false, fmt.Errorf("%w: binding record checksum %#08x, want %#08x", ErrCorrupt, sum, Checksum(p))
	}
	return append([]byte(nil), p...), true, nil
}

// PutDurableRecord writes the durable record into an encoded segment header
// (4096 bytes) in place; the segment checksum is computed after it.
func PutDurableRecord(header []byte, durable uint64) {
	r := header[DurableRecordOffset:HeaderSize]
	clear(r)
	binary.LittleEndian.PutUint32(r[0:], DurableMagic)
	binary.LittleEndian.PutUint16(r[4:], DurableV1)
	binary.LittleEndian.PutUint64(r[8:], durable)
}

// DurableRecordAt reads the durable record of an encoded segment header:
// ok false when it has none, or one of a version this build does not read
// (such a header is judged as one without the record). Only a header whose
// segment checksum holds vouches for it.
func DurableRecordAt(header []byte) (durable uint64, ok bool) {
	r := header[DurableRecordOffset:HeaderSize]
	if binary.LittleEndian.Uint32(r[0:]) != DurableMagic || binary.LittleEndian.Uint16(r[4:]) != DurableV1 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(r[8:]), true
}
