package layer

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/amqp-go/amqp"
)

// dialPolicy is how many times, and how far apart, the layer tries to
// connect (pika's connection_attempts and retry_delay).
type dialPolicy struct {
	attempts int
	delay    time.Duration
}

// Query parameters of pika 0.11's URLParameters, which asgi_rabbitmq hands
// its URL to, so that URLs copied from Django settings work. What each one
// becomes is documented on Config.URL.
var (
	pikaIgnored = map[string]string{
		"backpressure_detection":     "pika's own client-side heuristic, nothing on the wire",
		"blocked_connection_timeout": "every layer call is bounded by its ctx, which ends a wait on a blocked connection",
	}
	pikaRefused = map[string]string{
		"ssl_options": `pika takes a Python dict here; use an amqps:// URL with cacertfile, certfile, keyfile, server_name_indication and verify`,
		"tcp_options": "pika takes a Python dict of socket options; the layer has no equivalent",
	}
)

// parseURL parses the layer's URL: the amqp package's parameters, plus
// pika's.
func parseURL(raw string) (amqp.Config, dialPolicy, error) {
	dial := dialPolicy{attempts: 1, delay: 2 * time.Second} // pika's defaults
	base, query, _ := strings.Cut(raw, "?")
	query, fragment, hasFragment := strings.Cut(query, "#")
	var keep []string
	var socketTimeout, locale string
	seen := map[string]bool{}
	for part := range strings.SplitSeq(query, "&") {
		if part == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(part, "=")
		key, err1 := url.QueryUnescape(rawKey)
		value, err2 := url.QueryUnescape(rawValue)
		if err1 != nil || err2 != nil {
			keep = append(keep, part) // amqp.ParseURL says what is wrong
			continue
		}
		if key == "heartbeat_interval" {
			key = "heartbeat" // pika's older name for it
		}
		if key == "recovery" || strings.HasPrefix(key, "recovery_") {
			// The layer dials again on its next call and sets its mode's
			// objects up afresh; the client's recovery would also replay
			// every declaration it recorded, expired memberships included.
			return amqp.Config{}, dial, fmt.Errorf("layer: URL parameter %q: the layer reconnects by itself, on its next call; the client's connection recovery is not used", key)
		}
		if seen[key] {
			return amqp.Config{}, dial, fmt.Errorf("layer: URL parameter %q given more than once (heartbeat_interval is another name for heartbeat)", key)
		}
		seen[key] = true
		bad := func(what string) error {
			return fmt.Errorf("layer: URL parameter %s=%q: %s", key, value, what)
		}
		switch key {
		case "heartbeat":
			keep = append(keep, "heartbeat="+url.QueryEscape(value))
		case "connection_attempts":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 {
				return amqp.Config{}, dial, bad("not a whole number of attempts, at least 1")
			}
			dial.attempts = n
		case "retry_delay":
			d, err := pySeconds(value)
			if err != nil {
				return amqp.Config{}, dial, bad(err.Error())
			}
			dial.delay = d
		case "socket_timeout":
			if d, err := pySeconds(value); err != nil || d == 0 {
				return amqp.Config{}, dial, bad("not a positive number of seconds")
			}
			socketTimeout = value
		case "locale":
			locale = value
		default:
			if why, ok := pikaRefused[key]; ok {
				return amqp.Config{}, dial, bad("refused: " + why)
			}
			if _, ok := pikaIgnored[key]; ok {
				continue
			}
			keep = append(keep, part)
		}
	}
	u := base
	if len(keep) > 0 {
		u += "?" + strings.Join(keep, "&")
	}
	if hasFragment {
		u += "#" + fragment
	}
	cfg, err := amqp.ParseURL(u)
	if err != nil {
		return amqp.Config{}, dial, err
	}
	if socketTimeout != "" {
		cfg.ConnectionTimeout, _ = pySeconds(socketTimeout)
	}
	if locale != "" {
		cfg.Locale = locale
	}
	return cfg, dial, nil
}

// pySeconds parses a number of seconds, 0 or more, as Python's float() takes it.
func pySeconds(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || f > math.MaxInt64/float64(time.Second) {
		return 0, fmt.Errorf("not a number of seconds, 0 or more")
	}
	return time.Duration(f * float64(time.Second)), nil
}
