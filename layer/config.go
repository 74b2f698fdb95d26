package layer

import (
	"fmt"
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
type Config struct {
	// URL is the broker's AMQP URL, such as
	// "amqp://guest:guest@localhost:5672/%2F": the vhost is percent-encoded
	// ("/" is %2F), and query parameters go to the connection (heartbeat,
	// connection_timeout, connection_name, frame_max, TLS files with
	// amqps...; see amqp.ParseURL). Several nodes of a cluster may be
	// listed, "amqp://u:p@node1:5672,node2:5672/%2F": the layer connects to
	// the first that answers, and to the next one that does when it must
	// reconnect.
	URL string

	// Expiry is how long a message waits in a channel before it is
	// dropped unread (the channel queue's x-message-ttl). Default 60 s.
	// It is rounded up to whole milliseconds.
	Expiry time.Duration

	// GroupExpiry is how long a channel stays in a group after the last
	// GroupAdd for it (the membership queue's x-expires). Default 24 h.
	// It is rounded up to whole milliseconds.
	GroupExpiry time.Duration

	// Capacity is how many messages a channel holds before Send fails
	// with ErrChannelFull (the channel queue's x-max-length, with
	// x-overflow reject-publish). Default 100.
	Capacity int

	// ChannelCapacity overrides Capacity for the channels whose names a
	// rule's Pattern matches. The rules are tried in order and the first
	// match wins; a channel no rule matches gets Capacity.
	ChannelCapacity []CapacityRule

	// SymmetricEncryptionKeys, when not empty, encrypts every message
	// with Fernet. Each key is any string; the Fernet key is derived from
	// it as asgi_rabbitmq does: the SHA-256 digest of its UTF-8 bytes.
	// Messages are encrypted with the first key and decrypted with any of
	// them, so keys can be rotated: add the new key first, keep the old one
	// after it until no message encrypted with it remains, then drop it.
	// A layer with none of the keys cannot read the messages (ErrDecrypt).
	SymmetricEncryptionKeys []string

	// Namespace prefixes the names of everything the layer creates on the
	// broker: queue "<ns>:channel:<channel>" for each channel, fanout
	// exchange "<ns>:group:<group>" for each group, and fanout exchange
	// and queue "<ns>:member:<group>:<channel>" for each membership.
	// Layers that talk to each other share it. Up to 32 of the characters
	// allowed in group names, not starting with "amq.". Default "asgi".
	Namespace string
}

// CapacityRule gives the channels whose names Pattern matches a capacity of
// their own (see [Config].ChannelCapacity).
type CapacityRule struct {
	// Pattern is a regular expression (Go's RE2 syntax) that must match
	// the whole channel name: `http\.response!.*` matches
	// "http.response!abc" but not "xhttp.response!abc".
	Pattern string
	// Capacity is the channel's capacity; at least 1.
	Capacity int
}

type capacityRule struct {
	re       *regexp.Regexp
	capacity int
}

// settings is a checked Config with its defaults applied.
type settings struct {
	Config
	amqp        amqp.Config
	expiryMS    int64
	groupExpiry int64 // ms
	rules       []capacityRule
	codec       *codec
}

func (c Config) settings() (*settings, error) {
	if c.URL == "" {
		return nil, fmt.Errorf("layer: Config.URL is empty")
	}
	amqpCfg, err := amqp.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	s := &settings{Config: c, amqp: amqpCfg}
	if s.Expiry == 0 {
		s.Expiry = DefaultExpiry
	}
	if s.GroupExpiry == 0 {
		s.GroupExpiry = DefaultGroupExpiry
	}
	if s.Capacity == 0 {
		s.Capacity = DefaultCapacity
	}
	if s.Namespace == "" {
		s.Namespace = DefaultNamespace
	}
	if s.Expiry < 0 || s.GroupExpiry < 0 || s.Capacity < 0 {
		return nil, fmt.Errorf("layer: Expiry, GroupExpiry and Capacity must not be negative")
	}
	if len(s.Namespace) > 32 || !groupNameRE.MatchString(s.Namespace) || strings.HasPrefix(s.Namespace, "amq.") {
		return nil, &NameError{Kind: "namespace", Name: s.Namespace, Reason: "up to 32 " + nameChars + ", not starting with \"amq.\""}
	}
	s.expiryMS = millis(s.Expiry)
	s.groupExpiry = millis(s.GroupExpiry)
	for _, r := range c.ChannelCapacity {
		re, err := regexp.Compile(`^(?:` + r.Pattern + `)$`)
		if err != nil {
			return nil, fmt.Errorf("layer: ChannelCapacity pattern %q: %w", r.Pattern, err)
		}
		if r.Capacity < 1 {
			return nil, fmt.Errorf("layer: ChannelCapacity pattern %q: capacity %d is less than 1", r.Pattern, r.Capacity)
		}
		s.rules = append(s.rules, capacityRule{re: re, capacity: r.Capacity})
	}
	// Fernet tokens carry their creation time; like asgi_rabbitmq, accept
	// them for ten seconds past the message expiry.
	s.codec, err = newCodec(c.SymmetricEncryptionKeys, s.Expiry+10*time.Second)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// millis rounds d up to whole milliseconds, at least 1.
func millis(d time.Duration) int64 {
	return max(1, int64((d+time.Millisecond-1)/time.Millisecond))
}

// capacity returns the capacity of a channel: the first matching rule's, or
// the default.
func (s *settings) capacity(channel string) int {
	for _, r := range s.rules {
		if r.re.MatchString(channel) {
			return r.capacity
		}
	}
	return s.Capacity
}
