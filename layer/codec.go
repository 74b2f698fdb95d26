package layer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/vmihailenco/msgpack/v5"
)

// Message is what goes through a channel: a map with string keys, as in
// ASGI. It is serialized with msgpack (and then, with keys configured,
// encrypted with Fernet), so values may be anything msgpack encodes: nil,
// bool, integers, floats, string, []byte, slices, maps and structs.
//
// A received message holds only these types, whatever was sent: nil, bool,
// int64 (uint64 for integers above math.MaxInt64), float64, string, []byte,
// []any, map[string]any and time.Time (msgpack's timestamp extension).
// Strings and byte slices stay distinct, as with Python's msgpack
// use_bin_type=True. Maps must have string keys, nested ones too.
type Message map[string]any

// codec turns messages into bodies and back: msgpack, then Fernet when keys
// are configured.
type codec struct {
	keys []*fernet.Key // nil: no encryption; keys[0] encrypts
	ttl  time.Duration // a token older than this is refused
}

func newCodec(secrets []string, ttl time.Duration) (*codec, error) {
	c := &codec{ttl: ttl}
	for i, s := range secrets {
		if s == "" {
			return nil, fmt.Errorf("layer: SymmetricEncryptionKeys[%d] is empty", i)
		}
		k := fernetKey(s)
		c.keys = append(c.keys, &k)
	}
	return c, nil
}

// fernetKey derives the Fernet key of a configured key string as
// asgi_rabbitmq does (RabbitmqChannelLayer.make_fernet):
// Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode("utf8")).digest())).
// The base64 is only Python's way of passing the 32 bytes along.
func fernetKey(secret string) fernet.Key {
	return fernet.Key(sha256.Sum256([]byte(secret)))
}

func (c *codec) encode(m Message) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true) // as Python's msgpack writes them
	if m == nil {
		m = Message{} // an empty map, not msgpack's nil
	}
	if err := enc.Encode(map[string]any(m)); err != nil {
		return nil, fmt.Errorf("layer: encoding the message with msgpack: %w", err)
	}
	if len(c.keys) == 0 {
		return buf.Bytes(), nil
	}
	tok, err := fernet.EncryptAndSign(buf.Bytes(), c.keys[0])
	if err != nil {
		return nil, fmt.Errorf("layer: encrypting the message: %w", err)
	}
	return tok, nil
}

func (c *codec) decode(body []byte) (Message, error) {
	return c.decodeAt(body, c.ttl)
}

// decodeAt decodes with a given token time-to-live; 0 skips the time check.
func (c *codec) decodeAt(body []byte, ttl time.Duration) (Message, error) {
	if len(c.keys) > 0 {
		body = fernet.VerifyAndDecrypt(body, ttl, c.keys)
		if body == nil {
			return nil, ErrDecrypt
		}
	}
	// Checked first: the decoder trusts declared lengths, and five bytes
	// announcing a 4-billion-element array would make it allocate 64 GB.
	if err := checkMsgpack(body); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	r := bytes.NewReader(body)
	dec := msgpack.NewDecoder(r)
	v, err := dec.DecodeInterface()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the message", ErrDecode, r.Len())
	}
	m, ok := v.(map[string]any)
	if !ok {
		if v == nil {
			return nil, fmt.Errorf("%w: got nil", ErrDecode)
		}
		return nil, fmt.Errorf("%w: got %T", ErrDecode, v)
	}
	normalize(m)
	return Message(m), nil
}

// normalize replaces the integer and float types msgpack decodes (the width
// each number happened to have on the wire: Python writes 5 as a fixint and
// 200 as a uint8) by int64 (uint64 above math.MaxInt64) and float64.
func normalize(v any) any {
	switch x := v.(type) {
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
	case float32:
		return float64(x)
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	}
	return v
}

// maxNesting bounds how deep arrays and maps may nest in a message.
const maxNesting = 1000

// checkMsgpack walks one msgpack value without decoding it, and refuses it
// if it is truncated, has bytes after it, nests deeper than maxNesting, or
// declares more elements or bytes than the body holds (every element takes
// at least one byte), so that decoding it allocates in proportion to its
// size.
func checkMsgpack(b []byte) error {
	pos := 0
	// left[i] is how many values remain in the i-th open container; the
	// outermost "container" holds the one value of the body.
	left := []int{1}
	for len(left) > 0 {
		if left[len(left)-1] == 0 {
			left = left[:len(left)-1]
			continue
		}
		left[len(left)-1]--
		if pos >= len(b) {
			return errors.New("truncated")
		}
		c := b[pos]
		pos++
		n := func(size int) (int, error) { // a big-endian length of size bytes
			if pos+size > len(b) {
				return 0, errors.New("truncated")
			}
			v := 0
			for _, x := range b[pos : pos+size] {
				v = v<<8 | int(x)
			}
			pos += size
			return v, nil
		}
		skip, elems := 0, 0 // bytes to skip; values the container holds
		var err error
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			elems = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			elems = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			skip = int(c & 0x1f)
		case c == 0xc4 || c == 0xd9:
			skip, err = n(1)
		case c == 0xc5 || c == 0xda:
			skip, err = n(2)
		case c == 0xc6 || c == 0xdb:
			skip, err = n(4)
		case c == 0xc7:
			skip, err = n(1)
			skip++ // the ext type
		case c == 0xc8:
			skip, err = n(2)
			skip++
		case c == 0xc9:
			skip, err = n(4)
			skip++
		case c == 0xca:
			skip = 4
		case c == 0xcb:
			skip = 8
		case c >= 0xcc && c <= 0xcf:
			skip = 1 << (c - 0xcc)
		case c >= 0xd0 && c <= 0xd3:
			skip = 1 << (c - 0xd0)
		case c >= 0xd4 && c <= 0xd8:
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc:
			elems, err = n(2)
		case c == 0xdd:
			elems, err = n(4)
		case c == 0xde:
			elems, err = n(2)
			elems *= 2
		case c == 0xdf:
			elems, err = n(4)
			elems *= 2
		default: // 0xc1
			return fmt.Errorf("byte 0x%02x at %d is not msgpack", c, pos-1)
		}
		if err != nil {
			return err
		}
		if skip > len(b)-pos {
			return fmt.Errorf("a value at %d claims %d bytes; %d are left", pos, skip, len(b)-pos)
		}
		pos += skip
		if elems > 0 {
			if elems > len(b)-pos {
				return fmt.Errorf("a container at %d claims %d elements; %d bytes are left", pos, elems, len(b)-pos)
			}
			if len(left) > maxNesting {
				return fmt.Errorf("nested more than %d deep", maxNesting)
			}
			left = append(left, elems)
		}
	}
	if pos != len(b) {
		return fmt.Errorf("%d bytes after the message", len(b)-pos)
	}
	return nil
}
