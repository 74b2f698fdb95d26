package layer

import (
	"crypto/rand"
	"regexp"
	"strings"
	"unicode/utf8"
)

// MaxNameLength is the longest channel or group name, in characters: 99,
// as asgiref, Django Channels and both Python RabbitMQ layers enforce (they
// take names "shorter than 100"). Native names are ASCII, so in Native mode
// it is also their length in bytes.
const MaxNameLength = 99

var (
	// A native channel name: ASCII letters, digits, '-', '_' and '.',
	// optionally followed by '!' and a local part of the same characters
	// (a single-reader channel, as NewChannel makes).
	channelNameRE = regexp.MustCompile(`^[a-zA-Z0-9\-_.]+(![a-zA-Z0-9\-_.]*)?$`)
	// A native group name, or a NewChannel prefix: no '!'.
	groupNameRE = regexp.MustCompile(`^[a-zA-Z0-9\-_.]+$`)

	// The Python layers' rules, in Python's re semantics: \d is any
	// Unicode decimal digit and \w any Unicode letter, digit or '_'.
	// asgiref 1.1.2 (asgi_rabbitmq): one '?' or one '!' and a local part.
	asgiChannelRE = regexp.MustCompile(`^[a-zA-Z\p{Nd}\-_.]+([?!][\p{L}\p{N}_\-.]*)?$`)
	// channels 4 (channels_rabbitmq): only '!'.
	channelsChannelRE = regexp.MustCompile(`^[a-zA-Z\p{Nd}\-_.]+(![\p{L}\p{N}_\-.]*)?$`)
	// Both: groups.
	pyGroupRE = regexp.MustCompile(`^[a-zA-Z\p{Nd}\-_.]+$`)
)

const nameChars = "only ASCII letters, digits, hyphens, underscores and periods"

// checkLength checks a name's length in characters (Python counts code
// points).
func checkLength(kind, name string) error {
	if n := utf8.RuneCountInString(name); n == 0 || n > MaxNameLength {
		return &NameError{Kind: kind, Name: name, Reason: "must be 1 to 99 characters long"}
	}
	return nil
}

func checkChannel(name string) error {
	if err := checkLength("channel", name); err != nil {
		return err
	}
	if !channelNameRE.MatchString(name) {
		return &NameError{Kind: "channel", Name: name, Reason: nameChars + ", with at most one '!' after which the same characters follow"}
	}
	return nil
}

func checkGroup(name string) error {
	if err := checkLength("group", name); err != nil {
		return err
	}
	if !groupNameRE.MatchString(name) {
		return &NameError{Kind: "group", Name: name, Reason: nameChars}
	}
	return nil
}

// checkPyGroup is the group rule of both Python layers.
func checkPyGroup(name string) error {
	if err := checkLength("group", name); err != nil {
		return err
	}
	if !pyGroupRE.MatchString(name) {
		return &NameError{Kind: "group", Name: name, Reason: "only ASCII letters, digits, hyphens, underscores and periods"}
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
		return "", &NameError{Kind: "prefix", Name: prefix, Reason: "too long: the channel name it makes would exceed 99 characters"}
	}
	return name, nil
}

const asciiLetters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// randomLetters returns n ASCII letters, the alphabet both Python layers
// draw their names from (with Python's random module; crypto/rand here,
// which the other side cannot tell apart).
func randomLetters(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		// 256 = 4×52 + 48: reject the bytes that would bias the draw.
		for b[i] >= 4*52 {
			var one [1]byte
			rand.Read(one[:])
			b[i] = one[0]
		}
		b[i] = asciiLetters[b[i]%52]
	}
	return string(b)
}

// Native broker object names. The namespace keeps layers (and anything else
// on the vhost) apart; ':' never occurs in channel or group names, so every
// name parses back unambiguously.

func (l *Layer) queueName(channel string) string { return l.cfg.Namespace + ":channel:" + channel }

func (l *Layer) groupExchange(group string) string { return l.cfg.Namespace + ":group:" + group }

// memberName names both objects of a channel's membership in a group: its
// fanout exchange, which the group's exchange is bound to, and the queue
// bound to that exchange, which forwards to the channel's queue. (RabbitMQ
// keeps exchange and queue names apart.)
func (l *Layer) memberName(group, channel string) string {
	return l.cfg.Namespace + ":member:" + group + ":" + channel
}
