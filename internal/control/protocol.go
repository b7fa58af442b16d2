package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/writeboost/writeboost/internal/vocab"
)

// Wire limits. A request or response line longer than MaxLineLen ends the
// connection; they bound what one client can make the server buffer.
const (
	MaxLineLen = 64 << 10
	MaxArgs    = 16
	MaxArgLen  = 256
)

// Request ops.
const (
	OpStatus  = "status"
	OpTable   = "table"
	OpMessage = "message"
)

// Request is one line from client to server.
type Request struct {
	Op   string   `json:"op"`
	Args []string `json:"args,omitempty"` // OpMessage only
}

// Response is one line from server to client.
type Response struct {
	OK     bool          `json:"ok"`
	Error  string        `json:"error,omitempty"`
	Status *vocab.Status `json:"status,omitempty"` // OpStatus
	Table  string        `json:"table,omitempty"`  // OpTable
	Result string        `json:"result,omitempty"` // OpMessage: what the volume said, if anything
}

// DecodeRequest decodes and checks one request line (without its newline).
// It checks the shape only; the message words are validated by
// vocab.ParseMessage.
func DecodeRequest(line []byte) (Request, error) {
	var r Request
	if len(line) > MaxLineLen {
		return r, fmt.Errorf("%w: request of %d bytes, limit %d", ErrSyntax, len(line), MaxLineLen)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: request: %v", ErrSyntax, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Request{}, fmt.Errorf("%w: request: data after the JSON object", ErrSyntax)
	}
	switch r.Op {
	case OpStatus, OpTable:
		if len(r.Args) != 0 {
			return Request{}, fmt.Errorf("%w: request: op %q takes no args", ErrSyntax, r.Op)
		}
	case OpMessage:
		if len(r.Args) == 0 {
			return Request{}, fmt.Errorf("%w: request: op %q needs args", ErrSyntax, r.Op)
		}
		if len(r.Args) > MaxArgs {
			return Request{}, fmt.Errorf("%w: request: %d args, limit %d", ErrSyntax, len(r.Args), MaxArgs)
		}
		for i, a := range r.Args {
			if len(a) > MaxArgLen {
				return Request{}, fmt.Errorf("%w: request: arg %d is %d bytes, limit %d", ErrSyntax, i, len(a), MaxArgLen)
			}
		}
	case "":
		return Request{}, fmt.Errorf("%w: request: no op", ErrSyntax)
	default:
		return Request{}, fmt.Errorf("%w: request: unknown op %q", ErrSyntax, r.Op)
	}
	return r, nil
}

// encodeLine marshals v as one line with its newline.
func encodeLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
