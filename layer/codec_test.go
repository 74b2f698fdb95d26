package layer

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"regexp"
	"testing"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/stretchr/testify/require"
)

// pythonPacked is msgpack.packb({"text": "hello", "n": 3, "raw": b"\x00\x01"},
// use_bin_type=True), as asgi_rabbitmq serializes a message.
const pythonPacked = "83a474657874a568656c6c6fa16e03a3726177c4020001"

// pythonToken is that message encrypted by Python's cryptography package
// the way asgi_rabbitmq does it, with the key string "secret-key-1":
//
//	key = base64.urlsafe_b64encode(hashlib.sha256("secret-key-1".encode("utf8")).digest())
//	MultiFernet([Fernet(key)]).encrypt(packed)
const pythonToken = "gAAAAABrAoOjt2COluyiu8WzN4xNeCjXBCu_gkrilMFA6pXl1RSOZHk6A8ZwgzEHn4ixF6erhtEr0KLH7e-_RzwF-jmvcriJZ2Ygr-Qr7RyjKs3lDWaNTEc="

func TestFernetKeyDerivationMatchesPython(t *testing.T) {
	k := fernetKey("secret-key-1")
	// base64.urlsafe_b64encode(hashlib.sha256(b"secret-key-1").digest())
	require.Equal(t, "psHq751fI_ThPZtXTLvgeuh3In2SvofQdwBdxndrzcw=", k.Encode())
}

func TestDecodePythonToken(t *testing.T) {
	c, err := newCodec([]string{"other-key", "secret-key-1"}, time.Minute)
	require.NoError(t, err)
	// The token was made once, long ago: skip Fernet's time check here.
	m, err := c.decodeAt([]byte(pythonToken), 0)
	require.NoError(t, err)
	require.Equal(t, Message{"text": "hello", "n": int64(3), "raw": []byte{0, 1}}, m)

	// Past Fernet's time-to-live the token is refused like a wrong key.
	_, err = c.decodeAt([]byte(pythonToken), time.Nanosecond)
	require.ErrorIs(t, err, ErrDecrypt)

	wrong, err := newCodec([]string{"secret-key-2"}, 0)
	require.NoError(t, err)
	_, err = wrong.decodeAt([]byte(pythonToken), 0)
	require.ErrorIs(t, err, ErrDecrypt)
}

func TestEncodeLikePython(t *testing.T) {
	plain, err := newCodec(nil, time.Minute)
	require.NoError(t, err)
	want, _ := hex.DecodeString(pythonPacked)
	m, err := plain.decode(want)
	require.NoError(t, err)
	require.Equal(t, Message{"text": "hello", "n": int64(3), "raw": []byte{0, 1}}, m)

	// A one-key map encodes to the bytes Python's msgpack writes (maps of
	// several keys have no defined order).
	got, err := plain.encode(Message{"n": 3})
	require.NoError(t, err)
	require.Equal(t, []byte{0x81, 0xa1, 'n', 0x03}, got, "compact ints, str keys")
	got, err = plain.encode(nil)
	require.NoError(t, err)
	require.Equal(t, []byte{0x80}, got, "a nil Message is an empty map")
	got, err = plain.encode(Message{"b": []byte{7}, "s": "x"})
	require.NoError(t, err)
	require.Contains(t, string(got), "\xa1s\xa1x", "a string is a msgpack str")
	require.Contains(t, string(got), "\xa1b\xc4\x01\x07", "[]byte is a msgpack bin")

	// A token Go makes, Python's Fernet reads: same format, same key.
	enc, err := newCodec([]string{"secret-key-1"}, time.Minute)
	require.NoError(t, err)
	tok, err := enc.encode(Message{"n": 3})
	require.NoError(t, err)
	py := fernet.MustDecodeKeys("psHq751fI_ThPZtXTLvgeuh3In2SvofQdwBdxndrzcw=")
	require.Equal(t, []byte{0x81, 0xa1, 'n', 0x03}, fernet.VerifyAndDecrypt(tok, time.Minute, py))
}

func TestDecodeNormalizesTypes(t *testing.T) {
	c, err := newCodec(nil, time.Minute)
	require.NoError(t, err)
	in := Message{
		"small": 5, "uint8": 200, "neg": -70000, "big": uint64(math.MaxUint64), "f32": float32(1.5), "f64": 2.25,
		"nil": nil, "bool": true, "str": "s", "bin": []byte("b"),
		"list":   []any{1, "two", []byte{3}, map[string]any{"x": uint16(4)}},
		"nested": map[string]any{"deep": map[string]any{"n": int32(-1)}},
		"when":   time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC),
	}
	body, err := c.encode(in)
	require.NoError(t, err)
	out, err := c.decode(body)
	require.NoError(t, err)
	require.Equal(t, int64(5), out["small"])
	require.Equal(t, int64(200), out["uint8"])
	require.Equal(t, int64(-70000), out["neg"])
	require.Equal(t, uint64(math.MaxUint64), out["big"])
	require.Equal(t, 1.5, out["f32"])
	require.Equal(t, 2.25, out["f64"])
	require.Nil(t, out["nil"])
	require.Contains(t, out, "nil")
	require.Equal(t, true, out["bool"])
	require.Equal(t, "s", out["str"])
	require.Equal(t, []byte("b"), out["bin"])
	require.Equal(t, []any{int64(1), "two", []byte{3}, map[string]any{"x": int64(4)}}, out["list"])
	require.Equal(t, map[string]any{"deep": map[string]any{"n": int64(-1)}}, out["nested"])
	require.True(t, in["when"].(time.Time).Equal(out["when"].(time.Time)))
}

func TestDecodeRejects(t *testing.T) {
	c, err := newCodec(nil, time.Minute)
	require.NoError(t, err)
	for name, body := range map[string][]byte{
		"empty":       {},
		"nil":         {0xc0},
		"int":         {0x03},
		"list":        {0x91, 0x01},
		"int keys":    {0x81, 0x01, 0x02},
		"trailing":    {0x80, 0x00},
		"truncated":   {0x81, 0xa1},
		"fernet text": []byte(pythonToken),
		"huge array":  {0xdd, 0xfe, 0xfe, 0xfe, 0xa3}, // 4 billion elements: refused before any allocation
		"huge map":    {0xdf, 0xff, 0xff, 0xff, 0xff},
		"huge str":    {0x81, 0xdb, 0xff, 0xff, 0xff, 0xff},
		"deep":        append(bytes.Repeat([]byte{0x91}, 2000), 0x01),
	} {
		_, err := c.decode(body)
		require.ErrorIs(t, err, ErrDecode, name)
		require.False(t, errors.Is(err, ErrDecrypt), name)
	}
	// A layer with keys refuses plain msgpack.
	keyed, err := newCodec([]string{"k"}, time.Minute)
	require.NoError(t, err)
	plain, _ := hex.DecodeString(pythonPacked)
	_, err = keyed.decode(plain)
	require.ErrorIs(t, err, ErrDecrypt)
}

func TestKeyRotation(t *testing.T) {
	old, _ := newCodec([]string{"old"}, time.Minute)
	rotated, _ := newCodec([]string{"new", "old"}, time.Minute)
	fresh, _ := newCodec([]string{"new"}, time.Minute)

	fromOld, err := old.encode(Message{"v": "old"})
	require.NoError(t, err)
	fromRotated, err := rotated.encode(Message{"v": "rotated"})
	require.NoError(t, err)

	m, err := rotated.decode(fromOld)
	require.NoError(t, err, "decrypts with any key")
	require.Equal(t, "old", m["v"])
	m, err = fresh.decode(fromRotated)
	require.NoError(t, err, "encrypts with the first key")
	require.Equal(t, "rotated", m["v"])
	_, err = old.decode(fromRotated)
	require.ErrorIs(t, err, ErrDecrypt, "the old key alone cannot read what the first key encrypted")
	_, err = fresh.decode(fromOld)
	require.ErrorIs(t, err, ErrDecrypt)
}

func TestNames(t *testing.T) {
	for _, ok := range []string{"http.request", "a", "chat!abc123", "chat!", "x-y_z.0!A.b-c_"} {
		require.NoError(t, checkChannel(ok), ok)
	}
	long := string(make([]byte, 101))
	for _, bad := range []string{"", "a b", "a!b!c", "!abc", "café", "a:b", "a/b", "a?b", long} {
		err := checkChannel(bad)
		require.ErrorIs(t, err, ErrInvalidName, bad)
		var ne *NameError
		require.ErrorAs(t, err, &ne)
		require.Equal(t, "channel", ne.Kind)
	}
	require.NoError(t, checkGroup("room.lobby-1_x"))
	for _, bad := range []string{"", "a!b", "room!", "a:b", long} {
		require.ErrorIs(t, checkGroup(bad), ErrInvalidName, bad)
	}

	a, err := newChannelName("chat")
	require.NoError(t, err)
	b, err := newChannelName("chat!")
	require.NoError(t, err)
	require.NotEqual(t, a, b)
	require.Regexp(t, `^chat![A-Z2-7]{26}$`, a)
	require.Regexp(t, `^chat![A-Z2-7]{26}$`, b)
	require.NoError(t, checkChannel(a))
	for _, bad := range []string{"", "!", "a!b", "a b", string(make([]byte, 80))} {
		_, err := newChannelName(bad)
		require.ErrorIs(t, err, ErrInvalidName, bad)
	}
}

func TestSettings(t *testing.T) {
	s, err := Config{URL: "amqp://guest:guest@localhost:5672/%2F?heartbeat=15"}.settings()
	require.NoError(t, err)
	require.Equal(t, DefaultExpiry, s.Expiry)
	require.Equal(t, DefaultGroupExpiry, s.GroupExpiry)
	require.Equal(t, DefaultCapacity, s.Capacity)
	require.Equal(t, "asgi", s.Namespace)
	require.Equal(t, 15*time.Second, s.amqp.Heartbeat, "query parameters go to the connection")
	require.Equal(t, "/", s.amqp.Vhost)
	require.Equal(t, int64(60000), s.expiryMS)
	require.Equal(t, int64(86400000), s.groupExpiry)

	s, err = Config{
		URL:    "amqp://u:p@h1:5673,h2:5674/my%2Fvhost",
		Expiry: 1500*time.Millisecond + 1, Capacity: 7,
		ChannelCapacity: []CapacityRule{
			{Pattern: "http.request", Capacity: 200},
			{Pattern: "http.response!*", Capacity: 10},
			{Regexp: regexp.MustCompile(`http\.`), Capacity: 50},
			{Pattern: "[!a-z]x[0-9]?", Capacity: 3},
			{Regexp: regexp.MustCompile(`websocket\.(send|receive)!`), Capacity: 4},
		},
	}.settings()
	require.NoError(t, err)
	require.Equal(t, []string{"h1:5673", "h2:5674"}, s.amqp.Addrs)
	require.Equal(t, "my/vhost", s.amqp.Vhost)
	require.Equal(t, int64(1501), s.expiryMS, "rounded up to whole milliseconds")
	require.Equal(t, 200, s.capacity("http.request"))
	require.Equal(t, 10, s.capacity("http.response!abc"))
	require.Equal(t, 50, s.capacity("http.disconnect"), "first match wins")
	require.Equal(t, 7, s.capacity("xhttp.request"), "globs match the whole name, regexps at the start")
	require.Equal(t, 7, s.capacity("http"))
	require.Equal(t, 50, s.capacity("http.requestx"), "a glob matches the whole name; the regexp only the start")
	require.Equal(t, 3, s.capacity("Xx1y"))
	require.Equal(t, 3, s.capacity("-x9!"))
	require.Equal(t, 7, s.capacity("ax1y"), "[!a-z] excludes a")
	require.Equal(t, 7, s.capacity("Xx1"), "? is exactly one character")
	require.Equal(t, 7, s.capacity("Xx1yz"), "? is exactly one character")
	require.Equal(t, 4, s.capacity("websocket.send!abc"), "a regexp matches at the start")
	require.Equal(t, 7, s.capacity("my.websocket.send!abc"), "and only there")

	for name, c := range map[string]Config{
		"no URL":        {},
		"bad URL":       {URL: "http://x"},
		"bad query":     {URL: "amqp://h/?expiry=5"},
		"no pattern":    {URL: "amqp://h/", ChannelCapacity: []CapacityRule{{Capacity: 1}}},
		"both kinds":    {URL: "amqp://h/", ChannelCapacity: []CapacityRule{{Pattern: "a", Regexp: regexp.MustCompile("a"), Capacity: 1}}},
		"zero capacity": {URL: "amqp://h/", ChannelCapacity: []CapacityRule{{Pattern: "a"}}},
		"negative":      {URL: "amqp://h/", Expiry: -1},
		"namespace":     {URL: "amqp://h/", Namespace: "amq.x"},
		"namespace2":    {URL: "amqp://h/", Namespace: "a:b"},
		"empty key":     {URL: "amqp://h/", SymmetricEncryptionKeys: []string{""}},
	} {
		_, err := c.settings()
		require.Error(t, err, name)
	}
}

// FuzzDecodeMessage feeds the decoder the bodies another process may send:
// it never panics, a body it refuses matches ErrDecode, and what it accepts
// encodes and decodes again to the same message.
func FuzzDecodeMessage(f *testing.F) {
	seed, _ := hex.DecodeString(pythonPacked)
	for _, b := range [][]byte{seed, {0x80}, {0x81, 0xa1, 'n', 0x03}, []byte(pythonToken), {0xc0}, {0x81, 0x01, 0x02},
		// channels_rabbitmq's reserved keys
		{0x82, 0xb0, '_', '_', 'a', 's', 'g', 'i', '_', 'c', 'h', 'a', 'n', 'n', 'e', 'l', '_', '_', 0xa1, 'c', 0xa1, 'x', 0xc0}} {
		f.Add(b)
	}
	c, err := newCodec(nil, time.Minute)
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := c.decode(body)
		if err != nil {
			require.ErrorIs(t, err, ErrDecode)
			return
		}
		again, err := c.encode(m)
		require.NoError(t, err)
		m2, err := c.decode(again)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint(m), fmt.Sprint(m2))
	})
}
