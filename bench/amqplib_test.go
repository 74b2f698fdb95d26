package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// amqplibPeer is the Node.js amqplib consumer (testdata/amqplib-consume.js).
const amqplibPeer = "amqplib"

// amqplibPackage is the pinned npm package of the peer.
const amqplibPackage = "amqplib@0.10.9"

// amqplibDir returns the directory holding the peer script and its
// node_modules, installed once into the user's cache directory. It skips b
// without node and npm, or when npm cannot install (offline).
func amqplibDir(b *testing.B) string {
	b.Helper()
	_, errNode := exec.LookPath("node")
	_, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		b.Skip("node and npm are needed for the amqplib peer")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "amqp-go-bench", "node-amqplib0.10.9")
	if _, err := os.Stat(filepath.Join(dir, "installed")); err != nil {
		// Installed beside its final place and renamed, so a run cut short
		// never leaves a half-installed folder that looks complete.
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			b.Fatal(err)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(dir), "install-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "npm", "install", "--prefix", tmp, "--no-audit", "--no-fund", "--loglevel=error", amqplibPackage).CombinedOutput()
		if err != nil {
			b.Skipf("npm install failed (offline?): %v\n%s", err, out)
		}
		if err := os.WriteFile(filepath.Join(tmp, "installed"), nil, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(tmp, dir); err != nil {
			if _, statErr := os.Stat(filepath.Join(dir, "installed")); statErr != nil { // not a concurrent run's install
				b.Fatal(err)
			}
		}
	}
	script, err := os.ReadFile("testdata/amqplib-consume.js")
	if err != nil {
		b.Fatal(err)
	}
	peer := filepath.Join(dir, "amqplib-consume.js")
	if old, err := os.ReadFile(peer); err != nil || !bytes.Equal(old, script) {
		if err := os.WriteFile(peer, script, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// consumeAmqplib runs the amqplib peer on queue for b.N deliveries and
// reports its own measurement: CPU and wall time from its subscribe to the
// last delivery (Node's start-up is left out).
func consumeAmqplib(b *testing.B, url, queue string) {
	dir := amqplibDir(b)
	ctx := benchCtx(b)
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "amqplib-consume.js"), url, queue, fmt.Sprint(b.N))
	cmd.Stderr = os.Stderr
	b.ResetTimer()
	out, err := cmd.Output()
	b.StopTimer()
	if err != nil {
		b.Fatalf("amqplib peer: %v", err)
	}
	var res struct {
		CPUMicros float64 `json:"cpuMicros"`
		WallMs    float64 `json:"wallMs"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		b.Fatalf("amqplib peer output %q: %v", out, err)
	}
	n := float64(b.N)
	b.ReportMetric(res.CPUMicros*1e3/n, "cpu-ns/msg")
	b.ReportMetric(n/(res.WallMs/1e3), "msgs/s")
}
