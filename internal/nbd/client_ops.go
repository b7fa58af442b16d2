package nbd

import (
	"fmt"
	"sync"
)

// The client's commands. Each checks the range against the export and the
// server's block size constraints (NBD_INFO_BLOCK_SIZE): offsets and
// lengths must be multiples of the minimum (a request that is not is
// refused with ErrUnaligned, never widened: a read-modify-write would race
// with other writers), and a READ or WRITE longer than the maximum is split
// into requests of at most that size, sent at once.

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off int64) error {
	return c.split(cmdRead, 0, p, off, int64(len(p)), c.maxPayload())
}

// WriteAt writes p at off; fua asks for NBD_CMD_FLAG_FUA (the server must
// offer FlagSendFUA).
func (c *Client) WriteAt(p []byte, off int64, fua bool) error {
	var flags uint16
	if fua {
		if !c.info.Has(FlagSendFUA) {
			return fmt.Errorf("FUA write: %w", ErrUnsupported)
		}
		flags = cmdFlagFUA
	}
	if c.info.Has(FlagReadOnly) {
		return fmt.Errorf("write to read-only export %q: %w", c.export, replyError(errPerm))
	}
	return c.split(cmdWrite, flags, p, off, int64(len(p)), c.maxPayload())
}

// Flush sends NBD_CMD_FLUSH: every write acknowledged before it is durable
// when it succeeds. See Client for why it can fail after a reconnect.
func (c *Client) Flush() error {
	if !c.info.Has(FlagSendFlush) {
		return fmt.Errorf("flush: %w", ErrUnsupported)
	}
	return c.do(cmdFlush, 0, 0, 0, nil)
}

// Trim sends NBD_CMD_TRIM for the range (the server must offer it).
func (c *Client) Trim(off, length int64) error {
	if !c.info.Has(FlagSendTrim) {
		return fmt.Errorf("trim: %w", ErrUnsupported)
	}
	return c.split(cmdTrim, 0, nil, off, length, c.maxZero())
}

// WriteZeroes sends NBD_CMD_WRITE_ZEROES for the range (the server must
// offer it); fua as for WriteAt.
func (c *Client) WriteZeroes(off, length int64, fua bool) error {
	if !c.info.Has(FlagSendWriteZeroes) {
		return fmt.Errorf("write zeroes: %w", ErrUnsupported)
	}
	var flags uint16
	if fua {
		if !c.info.Has(FlagSendFUA) {
			return fmt.Errorf("FUA write zeroes: %w", ErrUnsupported)
		}
		flags = cmdFlagFUA
	}
	return c.split(cmdWriteZeroes, flags, nil, off, length, c.maxZero())
}

// maxPayload is the longest READ or WRITE: the server's maximum, rounded
// down to its minimum.
func (c *Client) maxPayload() int64 {
	m := int64(min(c.info.MaxBlock, MaxPayload))
	return max(m-m%int64(c.info.MinBlock), int64(c.info.MinBlock))
}

func (c *Client) maxZero() int64 {
	return maxZeroLength - maxZeroLength%int64(c.info.MinBlock)
}

// split checks [off, off+n) and sends it as requests of at most chunk
// bytes, all in flight at once; the first error wins.
func (c *Client) split(typ, flags uint16, p []byte, off, n, chunk int64) error {
	minb := int64(c.info.MinBlock)
	switch {
	case off < 0 || n < 0 || off > c.info.Size || n > c.info.Size-off:
		return fmt.Errorf("nbd %s at %d, %d bytes: beyond the export (%d bytes): %w", cmdName(typ), off, n, c.info.Size, replyError(errInval))
	case off%minb != 0 || n%minb != 0:
		return fmt.Errorf("nbd %s at %d, %d bytes: minimum block size %d: %w", cmdName(typ), off, n, minb, ErrUnaligned)
	case n == 0:
		return nil
	case n <= chunk:
		return c.wrap(typ, off, n, c.do(typ, flags, uint64(off), uint32(n), p))
	}
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for done := int64(0); done < n; done += chunk {
		l := min(chunk, n-done)
		var q []byte
		if p != nil {
			q = p[done : done+l]
		}
		wg.Go(func() {
			if err := c.do(typ, flags, uint64(off+done), uint32(l), q); err != nil {
				once.Do(func() { first = c.wrap(typ, off+done, l, err) })
			}
		})
	}
	wg.Wait()
	return first
}

func (c *Client) wrap(typ uint16, off, n int64, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("nbd %s export %q at %d, %d bytes: %w", cmdName(typ), c.export, off, n, err)
}

func cmdName(typ uint16) string {
	switch typ {
	case cmdRead:
		return "read"
	case cmdWrite:
		return "write"
	case cmdFlush:
		return "flush"
	case cmdTrim:
		return "trim"
	case cmdWriteZeroes:
		return "write-zeroes"
	}
	return fmt.Sprintf("command %d", typ)
}
