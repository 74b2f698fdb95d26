package layer

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/amqp-go/amqp"
)

// The defaults, the same as asgi_rabbitmq's.
const (
	DefaultExpiry      = 60 * time.Second
	DefaultGroupExpiry = 24 * time.Hour
	DefaultCapacity    = 100
	DefaultNamespace   = "asgi"
)

// Config configures a [Layer]. The zero value of every field but URL means
// its default. Every layer that shares a vhost and a Namespace must agree on
// Expiry, GroupExpiry and the capacity of each channel, since they become
// arguments of queues that all of them declare (RabbitMQ refuses to
// redeclare a queue with other arguments: 406 PRECONDITION_FAILED); and on
// SymmetricEncryptionKeys, to read each other's messages.
//
// Mode selects the mapping onto the broker; a mode compatible with a Python
// layer takes that layer's options (each field says which), and New refuses
// with an [*UnsupportedError] an option the Python layer does not have.
type Config struct {
	// URL is the broker's AMQP URL, such as
	// "amqp://guest:guest@localhost:5672/%2F": the vhost is percent-encoded
	// ("/" is %2F), and query parameters go to the connection (heartbeat,
	// connection_timeout, connection_name, frame_max, TLS files with
	// amqps...; see amqp.ParseURL). Several nodes of a cluster may be
	// listed, "amqp://u:p@node1:5672,node2:5672/%2F": the layer connects to
	// the first that answers, and to the next one that does when it must
	// reconnect.
	//
	// The query parameters of pika 0.11's URLParameters, which
	// asgi_rabbitmq's URL goes to, are accepted too, so that a URL copied
	// from Django settings works: heartbeat_interval is heartbeat;
	// connection_attempts and retry_delay (seconds) are how many times,
	// and how far apart, the layer tries to connect (defaults 1 and 2 s);
	// socket_timeout (seconds) is the connection timeout; locale is the
	// connection's locale; channel_max and frame_max as above.
	// backpressure_detection and blocked_connection_timeout are ignored
	// (every call is bounded by its ctx instead); ssl_options and
	// tcp_options are refused with an error (they are Python dicts; use
	// amqps:// with the TLS file parameters).
	URL string

	// Mode selects how channels and groups map onto the broker: Native
	// (the default), or the mapping of a Python layer, AsgiRabbitMQ or
	// ChannelsRabbitMQ, to join a Django Channels deployment.
	Mode WireMode

	// Expiry is how long a message waits in a channel before it is
	// dropped unread (the channel queue's x-message-ttl). Default 60 s.
	// It is rounded up to whole milliseconds. asgi_rabbitmq: expiry, whole
	// seconds. channels_rabbitmq: expiry, whole milliseconds.
	Expiry time.Duration

	// GroupExpiry is how long a channel stays in a group after the last
	// GroupAdd for it (the membership queue's x-expires). Default 24 h.
	// It is rounded up to whole milliseconds. asgi_rabbitmq:
	// group_expiry, whole seconds. channels_rabbitmq has none: setting it
	// is an error.
	GroupExpiry time.Duration

	// Capacity is how many messages a channel holds before Send fails
	// with ErrChannelFull (the channel queue's x-max-length, with
	// x-overflow reject-publish). Default 100. asgi_rabbitmq: capacity.
	// channels_rabbitmq: remote_capacity, the capacity of the layer's one
	// queue, shared by all its channels.
	Capacity int

	// ChannelCapacity overrides Capacity for the channels whose names a
	// rule matches. The rules are tried in order and the first match wins;
	// a channel no rule matches gets Capacity. asgi_rabbitmq:
	// channel_capacity. channels_rabbitmq has none.
	ChannelCapacity []CapacityRule

	// SymmetricEncryptionKeys, when not empty, encrypts every message
	// with Fernet. Each key is any string; the Fernet key is derived from
	// it as asgi_rabbitmq does: the SHA-256 digest of its UTF-8 bytes.
	// Messages are encrypted with the first key and decrypted with any of
	// them, so keys can be rotated: add the new key first, keep the old one
	// after it until no message encrypted with it remains, then drop it.
	// A layer with none of the keys cannot read the messages (ErrDecrypt).
	// asgi_rabbitmq: symmetric_encryption_keys. channels_rabbitmq has none.
	SymmetricEncryptionKeys []string

	// Namespace prefixes the names of everything the layer creates on the
	// broker: queue "<ns>:channel:<channel>" for each channel, fanout
	// exchange "<ns>:group:<group>" for each group, and fanout exchange
	// and queue "<ns>:member:<group>:<channel>" for each membership.
	// Layers that talk to each other share it. Up to 32 of the characters
	// allowed in group names, not starting with "amq.". Default "asgi".
	// Native mode only: the Python layers use the names as they are.
	Namespace string

	// LocalCapacity is, in ChannelsRabbitMQ mode, how many messages the
	// layer holds in memory, received from its queue and not yet taken by
	// Receive (its consumer's prefetch): channels_rabbitmq's
	// local_capacity. Default 100.
	LocalCapacity int

	// LocalExpiry is, in ChannelsRabbitMQ mode, how long a message held in
	// memory waits for a Receive before it is dropped: channels_rabbitmq's
	// local_expiry. Default 0: never, as in channels_rabbitmq's code.
	LocalExpiry time.Duration

	// GroupsExchange is, in ChannelsRabbitMQ mode, the direct exchange
	// that routes group messages: channels_rabbitmq's groups_exchange.
	// Default "groups".
	GroupsExchange string
}

// CapacityRule gives the channels whose names it matches a capacity of
// their own (see [Config].ChannelCapacity). Set one of Pattern and Regexp,
// as Django settings give channel_capacity keys: a string key is a glob, a
// compiled re.compile(...) key a regular expression.
type CapacityRule struct {
	// Pattern is a glob in Python's fnmatch syntax that must match the
	// whole channel name: "*" is any run of characters, "?" one
	// character, "[seq]" and "[!seq]" a character in or not in seq. So
	// "http.response!*" matches "http.response!abc" but not
	// "xhttp.response!abc".
	Pattern string
	// Regexp is a regular expression (Go's RE2 syntax) that must match at
	// the start of the channel name, as Python's re.match does: `http\.`
	// matches "http.request!x", not "xhttp.request".
	Regexp *regexp.Regexp
	// Capacity is the channel's capacity; at least 1.
	Capacity int
}

type capacityRule struct {
	re       *regexp.Regexp
	anchored bool // re must match at the start (a Regexp); globs are anchored at both ends already
	capacity int
}

// settings is a checked Config with its defaults applied.
type settings struct {
	Config
	amqp        amqp.Config
	dial        dialPolicy
	expiryMS    int64
	groupExpiry int64 // ms
	rules       []capacityRule
	codec       *codec
}

func (c Config) settings() (*settings, error) {
	if c.URL == "" {
		return nil, fmt.Errorf("layer: Config.URL is empty")
	}
	amqpCfg, dial, err := parseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	s := &settings{Config: c, amqp: amqpCfg, dial: dial}
	if err := s.checkMode(); err != nil {
		return nil, err
	}
	if s.Expiry == 0 {
		s.Expiry = DefaultExpiry
	}
	if s.GroupExpiry == 0 {
		s.GroupExpiry = DefaultGroupExpiry
	}
	if s.Capacity == 0 {
		s.Capacity = DefaultCapacity
	}
	if s.LocalCapacity == 0 {
		s.LocalCapacity = DefaultCapacity
	}
	if s.GroupsExchange == "" {
		s.GroupsExchange = "groups"
	}
	if s.Namespace == "" {
		s.Namespace = DefaultNamespace
	}
	if s.Expiry < 0 || s.GroupExpiry < 0 || s.Capacity < 0 || s.LocalCapacity < 0 || s.LocalExpiry < 0 {
		return nil, fmt.Errorf("layer: Expiry, GroupExpiry, Capacity, LocalCapacity and LocalExpiry must not be negative")
	}
	if s.LocalCapacity > math.MaxUint16 {
		return nil, fmt.Errorf("layer: LocalCapacity %d is more than a prefetch count can be (65535)", s.LocalCapacity)
	}
	if len(s.Namespace) > 32 || !groupNameRE.MatchString(s.Namespace) || strings.HasPrefix(s.Namespace, "amq.") {
		return nil, &NameError{Kind: "namespace", Name: s.Namespace, Reason: "up to 32 " + nameChars + ", not starting with \"amq.\""}
	}
	if s.Mode == AsgiRabbitMQ {
		// asgi_rabbitmq takes whole seconds and writes them times 1000
		// into queue arguments and message properties: other values would
		// give arguments a Python layer's declarations conflict with.
		for _, d := range []struct {
			name string
			v    time.Duration
		}{{"Expiry", s.Expiry}, {"GroupExpiry", s.GroupExpiry}} {
			if d.v%time.Second != 0 {
				return nil, fmt.Errorf("layer: %s %v: asgi_rabbitmq mode takes whole seconds, as asgi_rabbitmq does", d.name, d.v)
			}
		}
	}
	s.expiryMS = millis(s.Expiry)
	s.groupExpiry = millis(s.GroupExpiry)
	for i, r := range c.ChannelCapacity {
		var cr capacityRule
		switch {
		case r.Regexp != nil && r.Pattern != "":
			return nil, fmt.Errorf("layer: ChannelCapacity[%d]: set Pattern (a glob) or Regexp, not both", i)
		case r.Regexp != nil:
			cr = capacityRule{re: r.Regexp, anchored: true}
		case r.Pattern != "":
			re, err := regexp.Compile(globToRegexp(r.Pattern))
			if err != nil {
				return nil, fmt.Errorf("layer: ChannelCapacity[%d] pattern %q: %w", i, r.Pattern, err)
			}
			cr = capacityRule{re: re}
		default:
			return nil, fmt.Errorf("layer: ChannelCapacity[%d]: neither Pattern nor Regexp is set", i)
		}
		if r.Capacity < 1 {
			return nil, fmt.Errorf("layer: ChannelCapacity[%d]: capacity %d is less than 1", i, r.Capacity)
		}
		cr.capacity = r.Capacity
		s.rules = append(s.rules, cr)
	}
	// Fernet tokens carry their creation time; like asgi_rabbitmq, accept
	// them for ten seconds past the message expiry.
	s.codec, err = newCodec(c.SymmetricEncryptionKeys, s.Expiry+10*time.Second)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// checkMode refuses the options the mode's Python layer does not have.
func (s *settings) checkMode() error {
	unsupported := func(feature, reason string) error {
		return &UnsupportedError{Mode: s.Mode, Feature: feature, Reason: reason}
	}
	switch s.Mode {
	case Native:
		if s.LocalCapacity != 0 || s.LocalExpiry != 0 || s.GroupsExchange != "" {
			return unsupported("Config.LocalCapacity, LocalExpiry and GroupsExchange", "they are options of channels_rabbitmq mode")
		}
	case AsgiRabbitMQ:
		if s.Namespace != "" {
			return unsupported("Config.Namespace", "asgi_rabbitmq names queues and exchanges after the channels and groups themselves")
		}
		if s.LocalCapacity != 0 || s.LocalExpiry != 0 || s.GroupsExchange != "" {
			return unsupported("Config.LocalCapacity, LocalExpiry and GroupsExchange", "they are options of channels_rabbitmq mode")
		}
	case ChannelsRabbitMQ:
		switch {
		case s.Namespace != "":
			return unsupported("Config.Namespace", "channels_rabbitmq names its queue channels_<random> and its exchange GroupsExchange")
		case s.GroupExpiry != 0:
			return unsupported("Config.GroupExpiry", "channels_rabbitmq has no group expiry: a membership lasts as long as the layer's connection")
		case len(s.SymmetricEncryptionKeys) > 0:
			return unsupported("Config.SymmetricEncryptionKeys", "channels_rabbitmq has no encryption")
		case len(s.ChannelCapacity) > 0:
			return unsupported("Config.ChannelCapacity", "channels_rabbitmq has one queue per layer, whose capacity is Capacity (remote_capacity)")
		}
	default:
		return fmt.Errorf("layer: unknown Config.Mode %d", int(s.Mode))
	}
	return nil
}

// millis rounds d up to whole milliseconds, at least 1.
func millis(d time.Duration) int64 {
	return max(1, int64((d+time.Millisecond-1)/time.Millisecond))
}

// capacity returns the capacity of a channel: the first matching rule's, or
// the default.
func (s *settings) capacity(channel string) int {
	for _, r := range s.rules {
		if r.anchored {
			// re.match: a match that starts at 0 exists iff the
			// leftmost match starts at 0.
			if loc := r.re.FindStringIndex(channel); loc != nil && loc[0] == 0 {
				return r.capacity
			}
		} else if r.re.MatchString(channel) {
			return r.capacity
		}
	}
	return s.Capacity
}

// globToRegexp translates a glob as Python's fnmatch.translate does, into a
// regular expression that matches whole names.
func globToRegexp(glob string) string {
	var b strings.Builder
	b.WriteString(`^(?s:`)
	for i := 0; i < len(glob); {
		c := glob[i]
		i++
		switch c {
		case '*':
			if !strings.HasSuffix(b.String(), ".*") {
				b.WriteString(".*")
			}
		case '?':
			b.WriteByte('.')
		case '[':
			j := i
			if j < len(glob) && glob[j] == '!' {
				j++
			}
			if j < len(glob) && glob[j] == ']' {
				j++
			}
			for j < len(glob) && glob[j] != ']' {
				j++
			}
			if j >= len(glob) {
				b.WriteString(`\[`)
				continue
			}
			stuff := strings.ReplaceAll(glob[i:j], `\`, `\\`)
			i = j + 1
			switch {
			case stuff == "":
				b.WriteString(`[^\x00-\x{10FFFF}]`) // never matches, as Python's (?!)
			case stuff == "!":
				b.WriteByte('.')
			default:
				if stuff[0] == '!' {
					stuff = "^" + stuff[1:]
				} else if stuff[0] == '^' || stuff[0] == '[' {
					stuff = `\` + stuff
				}
				b.WriteString("[" + stuff + "]")
			}
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`)$`)
	return b.String()
}
