//go:build linux

package nbd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestIoctlNumbers pins the ioctl request numbers to <linux/nbd.h>: each
// "#define NBD_X _IO( 0xab, n )" must equal our constant.
func TestIoctlNumbers(t *testing.T) {
	const header = "/usr/include/linux/nbd.h"
	src, err := os.ReadFile(header)
	if err != nil {
		t.Fatalf("%v: install the Debian package linux-libc-dev", err)
	}
	ours := map[string]uint{
		"NBD_SET_SOCK":        ioctlSetSock,
		"NBD_SET_BLKSIZE":     ioctlSetBlksize,
		"NBD_SET_SIZE":        ioctlSetSize,
		"NBD_DO_IT":           ioctlDoIt,
		"NBD_CLEAR_SOCK":      ioctlClearSock,
		"NBD_CLEAR_QUE":       ioctlClearQue,
		"NBD_PRINT_DEBUG":     ioctlPrintDebug,
		"NBD_SET_SIZE_BLOCKS": ioctlSetSizeBlocks,
		"NBD_DISCONNECT":      ioctlDisconnect,
		"NBD_SET_TIMEOUT":     ioctlSetTimeout,
		"NBD_SET_FLAGS":       ioctlSetFlags,
	}
	re := regexp.MustCompile(`(?m)^#define\s+(NBD_\w+)\s+_IO\(\s*(0x[0-9a-fA-F]+)\s*,\s*(\d+)\s*\)`)
	found := 0
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		want, ok := ours[m[1]]
		if !ok {
			continue
		}
		typ, _ := strconv.ParseUint(m[2], 0, 8)
		nr, _ := strconv.ParseUint(m[3], 10, 8)
		// _IO(type, nr): no direction, no size.
		if got := uint(typ<<8 | nr); got != want {
			t.Errorf("%s = %#x in %s, ours %#x", m[1], got, header, want)
		}
		found++
	}
	if found != len(ours) {
		t.Errorf("matched %d of %d ioctls in %s", found, len(ours), header)
	}

	// The transmission flags handed to NBD_SET_FLAGS are the header's.
	flags := map[string]uint16{
		"NBD_FLAG_HAS_FLAGS":      FlagHasFlags,
		"NBD_FLAG_READ_ONLY":      FlagReadOnly,
		"NBD_FLAG_SEND_FLUSH":     FlagSendFlush,
		"NBD_FLAG_SEND_FUA":       FlagSendFUA,
		"NBD_FLAG_SEND_TRIM":      FlagSendTrim,
		"NBD_FLAG_CAN_MULTI_CONN": FlagCanMultiConn,
	}
	fre := regexp.MustCompile(`(?m)^#define\s+(NBD_FLAG_\w+)\s+\(1\s*<<\s*(\d+)\)`)
	for _, m := range fre.FindAllStringSubmatch(string(src), -1) {
		want, ok := flags[m[1]]
		if !ok {
			continue
		}
		bit, _ := strconv.Atoi(m[2])
		if uint16(1)<<bit != want {
			t.Errorf("%s = 1<<%d, ours %#x", m[1], bit, want)
		}
		delete(flags, m[1])
	}
	if len(flags) != 0 {
		t.Errorf("flags not found in %s: %v", header, flags)
	}
	if !strings.Contains(string(src), "NBD_REQUEST_MAGIC 0x25609513") || !strings.Contains(string(src), "NBD_REPLY_MAGIC 0x67446698") {
		t.Errorf("request/reply magic differ from %s", header)
	}
}

// TestAttachWithoutModule: the error paths on a host without the nbd
// driver. (With the module loaded, wb-create --attach is checked by hand;
// see man/wb-create.8.)
func TestAttachWithoutModule(t *testing.T) {
	dir := t.TempDir()
	e := Export{Name: "vol", Backend: newMem(1 << 20)}

	// No device node: the module is not loaded.
	_, err := Attach(context.Background(), filepath.Join(dir, "nbd0"), e)
	if !errors.Is(err, ErrNoKernelModule) || !strings.Contains(err.Error(), "modprobe nbd") {
		t.Errorf("missing device: %v", err)
	}
	// Something that is not an nbd device: the first ioctl gets ENOTTY.
	f := filepath.Join(dir, "plain")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Attach(context.Background(), f, e)
	if !errors.Is(err, ErrNoKernelModule) || !strings.Contains(err.Error(), "not an nbd device") {
		t.Errorf("regular file: %v", err)
	}
	// A size the driver cannot represent is refused before any ioctl.
	_, err = Attach(context.Background(), f, Export{Backend: newMem(1000)})
	if err == nil || !strings.Contains(err.Error(), "multiple of 512") {
		t.Errorf("odd size: %v", err)
	}
	if _, err := Attach(context.Background(), f, e, Options{}, Options{}); !errors.Is(err, ErrConfig) {
		t.Errorf("two Options: %v", err)
	}
	if _, err := os.Stat("/dev/nbd0"); errors.Is(err, os.ErrNotExist) {
		_, err = Attach(context.Background(), "/dev/nbd0", e)
		if !errors.Is(err, ErrNoKernelModule) {
			t.Errorf("/dev/nbd0 absent: %v", err)
		}
	}
}
