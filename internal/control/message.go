package control

import (
	"fmt"
	"strconv"
	"strings"
)

// OptionSpec describes one optional table argument of the kernel target,
// cf. the _args table of do_consume_optional_argv.
type OptionSpec struct {
	Name    string
	Min     uint64
	Max     uint64
	Default uint64
	// Static options can only be given when the volume is created; the
	// kernel refuses them as messages ("%s is a static option").
	Static bool
	Unit   string // for help text
	Help   string
}

// Options lists every optional argument in the kernel's order: the five
// dynamic tunables first, then the two static options.
var Options = [...]OptionSpec{
	{Name: "writeback_threshold", Min: 0, Max: 100, Default: 0, Unit: "%",
		Help: "background writeback runs while the backing device is busy less than this; 0: only when forced (a full ring, drop_caches)"},
	{Name: "nr_max_batched_writeback", Min: 1, Max: 32, Default: 32, Unit: "segments",
		Help: "the most segments written back in one batch, sorted by backing sector"},
	{Name: "update_sb_record_interval", Min: 0, Max: 3600, Default: 0, Unit: "s",
		Help: "record last_writeback_segment_id in the superblock this often; 0 disables"},
	{Name: "sync_data_interval", Min: 0, Max: 3600, Default: 0, Unit: "s",
		Help: "flush the RAM buffer and sync the cache device this often; 0 disables"},
	{Name: "read_cache_threshold", Min: 0, Max: 127, Default: 0, Unit: "blocks",
		Help: "stage reads into the cache unless more than this many consecutive blocks are read; 0 disables read caching"},
	{Name: "write_around_mode", Min: 0, Max: 1, Default: 0, Static: true,
		Help: "1: writes bypass the cache (needs a freshly formatted cache device)"},
	{Name: "nr_read_cache_cells", Min: 1, Max: 2048, Default: 2048, Static: true, Unit: "cells",
		Help: "read cache staging cells (4 KiB each)"},
}

// LookupOption returns the spec of the optional argument name (matched
// case-insensitively, as the kernel's strcasecmp does).
func LookupOption(name string) (OptionSpec, bool) {
	for _, o := range Options {
		if strings.EqualFold(o.Name, name) {
			return o, true
		}
	}
	return OptionSpec{}, false
}

// parseValue reads a value the way dm_read_arg does: a decimal unsigned
// number within [Min, Max].
func (o OptionSpec) parseValue(v string) (uint64, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %q is not a number (%d..%d)", ErrBadMessage, o.Name, v, o.Min, o.Max)
	}
	if n < o.Min || n > o.Max {
		return 0, fmt.Errorf("%w: %s: %d is out of range %d..%d", ErrBadMessage, o.Name, n, o.Min, o.Max)
	}
	return n, nil
}

// OptionValues are the optional arguments of a volume, defaults filled in.
type OptionValues struct {
	WritebackThreshold     uint64
	NrMaxBatchedWriteback  uint64
	UpdateSBRecordInterval uint64
	SyncDataInterval       uint64
	ReadCacheThreshold     uint64
	WriteAroundMode        bool
	NrReadCacheCells       uint64
	// Args is the canonical KEY VALUE list as given (keys lower-cased,
	// values as parsed), for the table line and the state file.
	Args []string
}

// DefaultOptionValues returns the kernel's defaults.
func DefaultOptionValues() OptionValues {
	var v OptionValues
	for _, o := range Options {
		v.set(o.Name, o.Default)
	}
	return v
}

func (v *OptionValues) set(name string, n uint64) {
	switch name {
	case "writeback_threshold":
		v.WritebackThreshold = n
	case "nr_max_batched_writeback":
		v.NrMaxBatchedWriteback = n
	case "update_sb_record_interval":
		v.UpdateSBRecordInterval = n
	case "sync_data_interval":
		v.SyncDataInterval = n
	case "read_cache_threshold":
		v.ReadCacheThreshold = n
	case "write_around_mode":
		v.WriteAroundMode = n != 0
	case "nr_read_cache_cells":
		v.NrReadCacheCells = n
	}
}

// ParseOptionalArgs validates the optional KEY VALUE arguments of a table
// (wb-create NAME BACKING CACHE [KEY VALUE]...), all seven keys allowed,
// with the kernel's ranges. Unlike the kernel, a key given twice is an
// error rather than last-wins: it is almost always a typo.
func ParseOptionalArgs(args []string) (OptionValues, error) {
	v := DefaultOptionValues()
	if len(args)%2 != 0 {
		return v, fmt.Errorf("%w: optional args come in KEY VALUE pairs, got %d words", ErrBadMessage, len(args))
	}
	seen := map[string]bool{}
	for i := 0; i < len(args); i += 2 {
		o, ok := LookupOption(args[i])
		if !ok {
			return v, fmt.Errorf("%w: unknown optional arg %q (want one of %s)", ErrBadMessage, args[i], optionNames(true))
		}
		if seen[o.Name] {
			return v, fmt.Errorf("%w: optional arg %s given twice", ErrBadMessage, o.Name)
		}
		seen[o.Name] = true
		n, err := o.parseValue(args[i+1])
		if err != nil {
			return v, err
		}
		v.set(o.Name, n)
		v.Args = append(v.Args, o.Name, strconv.FormatUint(n, 10))
	}
	return v, nil
}

func optionNames(static bool) string {
	var names []string
	for _, o := range Options {
		if static || !o.Static {
			names = append(names, o.Name)
		}
	}
	return strings.Join(names, ", ")
}

// MessageKind says what a message asks for.
type MessageKind int

// The message verbs. The first three are the kernel's (cf.
// writeboost_message); flush and remove stand in for dmsetup suspend and
// dmsetup remove.
const (
	MsgSetTunable MessageKind = iota + 1 // KEY VALUE, a dynamic tunable
	MsgClearStat                         // clear_stat: zero the 16 counters and nr_partial_flushed
	MsgDropCaches                        // drop_caches: write back until nothing is dirty
	MsgFlush                             // flush: seal and write the RAM buffer
	MsgRemove                            // remove [--no-writeback] [--force]: stop the volume cleanly
)

// Message is a validated message.
type Message struct {
	Kind        MessageKind
	Key         string // MsgSetTunable: the tunable's canonical name
	Value       uint64 // MsgSetTunable: the new value
	NoWriteback bool   // MsgRemove: skip writing dirty blocks back
	Force       bool   // MsgRemove: stop even while NBD clients are connected
}

// Args returns the canonical words of m, as sent over the control socket
// and passed to Volume.Message.
func (m Message) Args() []string {
	switch m.Kind {
	case MsgSetTunable:
		return []string{m.Key, strconv.FormatUint(m.Value, 10)}
	case MsgClearStat:
		return []string{"clear_stat"}
	case MsgDropCaches:
		return []string{"drop_caches"}
	case MsgFlush:
		return []string{"flush"}
	case MsgRemove:
		args := []string{"remove"}
		if m.NoWriteback {
			args = append(args, "--no-writeback")
		}
		if m.Force {
			args = append(args, "--force")
		}
		return args
	}
	return nil
}

// RefuseRemove returns an *InUseError when m is a remove without --force
// and clients NBD connections are open to the volume name; nil otherwise.
// The control server asks it before a remove starts, and the volume again
// just before it stops (a writeback may have taken minutes): the engine
// side decides, not the client.
func RefuseRemove(m Message, name string, clients uint64) error {
	if m.Kind != MsgRemove || m.Force || clients == 0 {
		return nil
	}
	return &InUseError{Name: name, Clients: clients}
}

// ParseMessage validates the words of a message (what follows the sector
// in `dmsetup message NAME 0 ...`): a dynamic tunable and its value within
// the kernel's range, clear_stat, drop_caches, flush or remove
// [--no-writeback] [--force] (the two flags in either order, each at most
// once). Verbs and keys match case-insensitively, as the kernel's do.
// Static options are refused with the reason.
func ParseMessage(args []string) (Message, error) {
	if len(args) == 0 {
		return Message{}, fmt.Errorf("%w: empty message", ErrBadMessage)
	}
	verb := strings.ToLower(args[0])
	noArgs := func(k MessageKind) (Message, error) {
		if len(args) != 1 {
			return Message{}, fmt.Errorf("%w: %s takes no arguments, got %q", ErrBadMessage, verb, strings.Join(args[1:], " "))
		}
		return Message{Kind: k}, nil
	}
	switch verb {
	case "clear_stat":
		return noArgs(MsgClearStat)
	case "drop_caches":
		return noArgs(MsgDropCaches)
	case "flush":
		return noArgs(MsgFlush)
	case "remove":
		m := Message{Kind: MsgRemove}
		for _, a := range args[1:] {
			switch {
			case a == "--no-writeback" && !m.NoWriteback:
				m.NoWriteback = true
			case a == "--force" && !m.Force:
				m.Force = true
			default:
				return Message{}, fmt.Errorf("%w: remove takes only --no-writeback and --force, each at most once, got %q", ErrBadMessage, strings.Join(args[1:], " "))
			}
		}
		return m, nil
	case "nr_cur_batched_writeback":
		return Message{}, fmt.Errorf("%w: nr_cur_batched_writeback is the writeback daemon's current batch and read-only; set nr_max_batched_writeback", ErrBadMessage)
	}
	o, ok := LookupOption(verb)
	if !ok {
		return Message{}, fmt.Errorf("%w: unknown message %q (want clear_stat, drop_caches, flush, remove [--no-writeback] [--force], or one of %s followed by a value)",
			ErrBadMessage, args[0], optionNames(false))
	}
	if o.Static {
		return Message{}, fmt.Errorf("%w: %s can only be set when the volume is created (wb-create NAME BACKING CACHE %s N); it cannot change while running",
			ErrStaticOption, o.Name, o.Name)
	}
	if len(args) != 2 {
		return Message{}, fmt.Errorf("%w: %s takes one value (%d..%d), got %d", ErrBadMessage, o.Name, o.Min, o.Max, len(args)-1)
	}
	n, err := o.parseValue(args[1])
	if err != nil {
		return Message{}, err
	}
	return Message{Kind: MsgSetTunable, Key: o.Name, Value: n}, nil
}
