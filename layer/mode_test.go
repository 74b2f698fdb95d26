package layer

import (
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Each compatible mode refuses, at New, the options its Python layer lacks.
func TestModeRefusesOptionsThePythonLayerLacks(t *testing.T) {
	const u = "amqp://h/"
	for name, c := range map[string]Config{
		"channels_rabbitmq group expiry":     {URL: u, Mode: ChannelsRabbitMQ, GroupExpiry: time.Hour},
		"channels_rabbitmq encryption":       {URL: u, Mode: ChannelsRabbitMQ, SymmetricEncryptionKeys: []string{"k"}},
		"channels_rabbitmq channel capacity": {URL: u, Mode: ChannelsRabbitMQ, ChannelCapacity: []CapacityRule{{Pattern: "a", Capacity: 1}}},
		"channels_rabbitmq namespace":        {URL: u, Mode: ChannelsRabbitMQ, Namespace: "x"},
		"asgi_rabbitmq namespace":            {URL: u, Mode: AsgiRabbitMQ, Namespace: "x"},
		"asgi_rabbitmq local capacity":       {URL: u, Mode: AsgiRabbitMQ, LocalCapacity: 3},
		"native groups exchange":             {URL: u, GroupsExchange: "g"},
	} {
		_, err := c.settings()
		require.ErrorIs(t, err, ErrUnsupported, name)
	}
	for name, c := range map[string]Config{
		"asgi_rabbitmq fractional expiry":       {URL: u, Mode: AsgiRabbitMQ, Expiry: 1500 * time.Millisecond},
		"asgi_rabbitmq fractional group expiry": {URL: u, Mode: AsgiRabbitMQ, GroupExpiry: time.Second / 2},
		"unknown mode":                          {URL: u, Mode: 7},
		"local capacity over a prefetch count":  {URL: u, Mode: ChannelsRabbitMQ, LocalCapacity: 70000},
	} {
		_, err := c.settings()
		require.Error(t, err, name)
	}
	s, err := Config{URL: u, Mode: ChannelsRabbitMQ, LocalCapacity: 1, Capacity: 2}.settings()
	require.NoError(t, err)
	require.Equal(t, "groups", s.GroupsExchange)
	require.Equal(t, 2, s.capacity("channels_abc!def"))
	s, err = Config{URL: u, Mode: AsgiRabbitMQ, ChannelCapacity: []CapacityRule{{Regexp: regexp.MustCompile(`a`), Capacity: 1}}}.settings()
	require.NoError(t, err)
	require.Equal(t, 1, s.capacity("a!x"))
}

// URLs copied from Django settings: pika 0.11's URLParameters names.
func TestURLTakesPikaParameters(t *testing.T) {
	s, err := Config{URL: "amqp://guest:guest@localhost:5672/myvhost?heartbeat_interval=15&connection_attempts=3&retry_delay=0.5" +
		"&socket_timeout=2.5&locale=en_GB&channel_max=64&frame_max=131072&backpressure_detection=t&blocked_connection_timeout=30"}.settings()
	require.NoError(t, err)
	require.Equal(t, 15*time.Second, s.amqp.Heartbeat, "heartbeat_interval is heartbeat")
	require.Equal(t, "myvhost", s.amqp.Vhost)
	require.Equal(t, 3, s.dial.attempts)
	require.Equal(t, 500*time.Millisecond, s.dial.delay)
	require.Equal(t, 2500*time.Millisecond, s.amqp.ConnectionTimeout, "socket_timeout is the connection timeout")
	require.Equal(t, "en_GB", s.amqp.Locale)
	require.Equal(t, uint16(64), s.amqp.ChannelMax)
	require.Equal(t, uint32(131072), s.amqp.FrameMax)

	s, err = Config{URL: "amqp://h/?heartbeat=7&connection_name=x"}.settings()
	require.NoError(t, err)
	require.Equal(t, 7*time.Second, s.amqp.Heartbeat)
	require.Equal(t, 1, s.dial.attempts, "pika's default: one attempt")

	for name, u := range map[string]string{
		"ssl_options refused":  "amqps://h/?ssl_options=%7B%7D",
		"tcp_options refused":  "amqp://h/?tcp_options=%7B%7D",
		"both heartbeat names": "amqp://h/?heartbeat=1&heartbeat_interval=2",
		"zero attempts":        "amqp://h/?connection_attempts=0",
		"bad retry delay":      "amqp://h/?retry_delay=soon",
		"zero socket timeout":  "amqp://h/?socket_timeout=0",
		"unknown still fails":  "amqp://h/?expiry=5",
		"client recovery":      "amqp://h/?recovery=on",
		"client recovery knob": "amqp://h/?recovery_republish=true",
	} {
		_, err := Config{URL: u}.settings()
		require.Error(t, err, name)
		t.Logf("%s: %v", name, err)
	}
}

// RabbitMQ compares queue arguments with their types, so each mode writes
// integers as its Python layer's encoder does: pika 0.11 (asgi_rabbitmq)
// 'I' when it fits, else 'l'; pamqp (channels_rabbitmq) the smallest type.
func TestArgumentIntegersTypedAsPython(t *testing.T) {
	require.Equal(t, int32(0), pikaInt(0))
	require.Equal(t, int32(120000), pikaInt(120000))
	require.Equal(t, int64(1<<40), pikaInt(1<<40))
	for v, want := range map[int64]any{
		100: int8(100), -100: int8(-100), 1000: int16(1000), 60000: uint16(60000),
		100000: int32(100000), 3000000000: uint32(3000000000), 1 << 40: int64(1 << 40),
	} {
		require.Equal(t, want, pamqpInt(v), "%d", v)
	}
}
