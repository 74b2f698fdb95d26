package layer

import (
	"crypto/rand"
	"regexp"
	"strings"
)

// MaxNameLength is the longest channel or group name, in bytes, as in the
// ASGI specification.
const MaxNameLength = 100

var (
	// A channel name: ASCII letters, digits, '-', '_' and '.', optionally
	// followed by '!' and a local part of the same characters (a
	// single-reader channel, as NewChannel makes).
	channelNameRE = regexp.MustCompile(`^[a-zA-Z0-9\-_.]+(![a-zA-Z0-9\-_.]*)?$`)
	// A group name, or a NewChannel prefix: no '!'.
	groupNameRE = regexp.MustCompile(`^[a-zA-Z0-9\-_.]+$`)
)

const nameChars = "only ASCII letters, digits, hyphens, underscores and periods"

func checkChannel(name string) error {
	switch {
	case len(name) == 0 || len(name) > MaxNameLength:
		return &NameError{Kind: "channel", Name: name, Reason: "must be 1 to 100 bytes long"}
	case !channelNameRE.MatchString(name):
		return &NameError{Kind: "channel", Name: name, Reason: nameChars + ", with at most one '!' after which the same characters follow"}
	}
	return nil
}

func checkGroup(name string) error {
	switch {
	case len(name) == 0 || len(name) > MaxNameLength:
		return &NameError{Kind: "group", Name: name, Reason: "must be 1 to 100 bytes long"}
	case !groupNameRE.MatchString(name):
		return &NameError{Kind: "group", Name: name, Reason: nameChars}
	}
	return nil
}

// newChannelName returns prefix + "!" + 26 random base32 characters (130
// bits from crypto/rand).
func newChannelName(prefix string) (string, error) {
	prefix = strings.TrimSuffix(prefix, "!")
	name := prefix + "!" + rand.Text()
	if len(prefix) == 0 || !groupNameRE.MatchString(prefix) {
		return "", &NameError{Kind: "prefix", Name: prefix, Reason: nameChars + ", optionally ending in '!'"}
	}
	if len(name) > MaxNameLength {
		return "", &NameError{Kind: "prefix", Name: prefix, Reason: "too long: the channel name it makes would exceed 100 bytes"}
	}
	return name, nil
}

// Broker object names. The namespace keeps layers (and anything else on the
// vhost) apart; ':' never occurs in channel or group names, so every name
// parses back unambiguously.

func (l *Layer) queueName(channel string) string { return l.cfg.Namespace + ":channel:" + channel }

func (l *Layer) groupExchange(group string) string { return l.cfg.Namespace + ":group:" + group }

// memberName names both objects of a channel's membership in a group: its
// fanout exchange, which the group's exchange is bound to, and the queue
// bound to that exchange, which forwards to the channel's queue. (RabbitMQ
// keeps exchange and queue names apart.)
func (l *Layer) memberName(group, channel string) string {
	return l.cfg.Namespace + ":member:" + group + ":" + channel
}
