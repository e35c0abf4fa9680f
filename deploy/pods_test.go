package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestStatefulSetPodsFormCluster starts three throng processes with the
// arguments and environment the chart's StatefulSet gives pods
// throng-0…2 (podNode: downward API, secrets, $(VAR) references as the
// kubelet resolves them) and checks that they form one cluster through
// the peer list as written — DNS names of the headless service.
//
// The test resolver: each process runs in its own mount namespace
// (unshare --mount, as root or in a user namespace) with /etc/hosts
// bind-mounted to a file that maps throng-N.<headless>.<ns>.svc to
// 127.0.77.N+1, the "pod IP". A pod has its own IP, so its listeners,
// ":6222" and the other ports of the manifest, become 127.0.77.N+1:port
// — the only change to the pod's environment besides the secrets' values
// and the data directory (the PVC's mount).
func TestStatefulSetPodsFormCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	if err := exec.Command("unshare", "--mount", "true").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("unshare --mount (the test resolver) does not work here: %v", err)
		}
		t.Skipf("unshare --mount: %v (needs root or user namespaces)", err)
	}
	o := render(t)
	if len(o.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets", len(o.statefulSets))
	}
	sts := o.statefulSets[0]
	const ns = "iot"
	dir := t.TempDir()
	bin := filepath.Join(dir, "throng")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/throngmq/throng/cmd/throng").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	const replicas = 3
	podIP := func(i int) string { return fmt.Sprintf("127.0.77.%d", i+1) }
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1 localhost\n")
	for i := range replicas {
		fmt.Fprintf(&hosts, "%s %s-%d.%s.%s.svc\n", podIP(i), sts.Name, i, sts.Spec.ServiceName, ns)
	}
	hostsFile := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hostsFile, []byte(hosts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"cluster-secret": "k8s-cluster-secret", "admin-password": "k8s-admin-pw"}
	const adminPW = "k8s-admin-pw"

	admins := make([]string, replicas)
	https := make([]string, replicas)
	for i := range replicas {
		n := podNode(t, sts, ns, i)
		ip := podIP(i)
		listeners := map[string]string{ // env of each listener the pod opens, from its loaded config
			"THRONG_AMQP": n.cfg.Listeners.AMQP, "THRONG_AMQPS": n.cfg.Listeners.AMQPS,
			"THRONG_MQTT": n.cfg.Listeners.MQTT, "THRONG_MQTTS": n.cfg.Listeners.MQTTS,
			"THRONG_HTTP": n.cfg.Listeners.HTTP, "THRONG_HTTPS": n.cfg.Listeners.HTTPS,
			"THRONG_ADMIN": n.cfg.Listeners.Admin, "THRONG_PPROF": n.cfg.Debug.Pprof,
			"THRONG_AMQP_WS": n.cfg.Listeners.AMQPWebSocket, "THRONG_MQTT_WS": n.cfg.Listeners.MQTTWebSocket,
		}
		var env []string
		for _, kv := range n.env {
			k, v, _ := strings.Cut(kv, "=")
			switch {
			case strings.HasPrefix(v, "secret:"):
				s, ok := secrets[v[strings.LastIndex(v, "/")+1:]]
				if !ok {
					t.Fatalf("pod %d: env %s from an unknown secret key %s", i, k, v)
				}
				v = s
			case k == "THRONG_DATA_DIR":
				v = filepath.Join(dir, fmt.Sprintf("pv-%d", i)) // the PVC
			case k == "THRONG_CLUSTER_LISTEN":
				v = onIP(t, ip, v)
			}
			if _, ok := listeners[k]; ok {
				continue // set below from the loaded config
			}
			env = append(env, k+"="+v)
		}
		for k, addr := range listeners {
			if addr != "" {
				addr = onIP(t, ip, addr)
			}
			env = append(env, k+"="+addr) // empty: disabled, as in the pod
		}
		slices.Sort(env)
		admins[i] = "http://" + onIP(t, ip, n.cfg.Listeners.Admin)
		https[i] = "http://" + onIP(t, ip, n.cfg.Listeners.HTTP)

		// sh mounts the hosts file in the new namespace, then becomes throng.
		args := append([]string{"--mount", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hostsFile, bin}, n.args...)
		cmd := exec.Command("unshare", args...)
		cmd.Env = append(withoutThrong(os.Environ()), env...)
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("throng-%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("throng-%d log (last 3 KiB):\n%s", i, tail(b, 3<<10))
			}
		})
	}

	// Every pod becomes ready (the readiness probe's /readyz) and sees
	// the three nodes by their pod names.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := &http.Client{Timeout: 5 * time.Second}
	var want []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("%s-%d", sts.Name, i))
	}
	for i, base := range admins {
		for {
			if resp, err := c.Get(base + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("pod %d (%s) not ready within 3 minutes", i, base)
			}
			time.Sleep(200 * time.Millisecond)
		}
		var st struct {
			Cluster struct {
				Clustered bool `json:"clustered"`
				Node      string
				Nodes     []struct {
					Name   string `json:"name"`
					Online bool   `json:"online"`
				} `json:"nodes"`
			} `json:"cluster"`
		}
		for {
			st.Cluster.Nodes = nil
			getJSON(t, c, base+"/api/status", adminPW, &st)
			var online []string
			for _, n := range st.Cluster.Nodes {
				if n.Online {
					online = append(online, n.Name)
				}
			}
			slices.Sort(online)
			if st.Cluster.Clustered && slices.Equal(online, want) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("pod %d: cluster %+v, want nodes %v online", i, st.Cluster, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if st.Cluster.Node != want[i] {
			t.Errorf("pod %d calls itself %q", i, st.Cluster.Node)
		}
	}

	// A queue defined through throng-1, a message published on throng-2,
	// received on throng-0.
	def, _ := http.NewRequestWithContext(ctx, "POST", admins[1]+"/api/tenants/default/addresses", strings.NewReader(`{"name":"k8s-orders","type":"queue"}`))
	def.SetBasicAuth("admin", adminPW)
	def.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(def)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("define the queue on throng-1: %d %s", resp.StatusCode, b)
	}
	pub, err := http.NewRequestWithContext(ctx, "POST", https[2]+"/api/v1/addresses/k8s-orders/messages", strings.NewReader(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	pub.SetBasicAuth("admin", adminPW)
	pub.Header.Set("Content-Type", "application/json")
	resp, err = c.Do(pub)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("publish on throng-2: %d %s", resp.StatusCode, b)
	}
	rcv, _ := http.NewRequestWithContext(ctx, "POST", https[0]+"/api/v1/addresses/k8s-orders/messages/receive?wait=10s", nil)
	rcv.SetBasicAuth("admin", adminPW)
	c.Timeout = 30 * time.Second
	resp, err = c.Do(rcv)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`{\"n\":1}`)) {
		t.Fatalf("receive on throng-0: %d %s", resp.StatusCode, b)
	}
}

// onIP puts listen address addr (":6222", "0.0.0.0:8161") on host ip.
func onIP(t *testing.T, ip, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return net.JoinHostPort(ip, port)
}

// withoutThrong drops THRONG_* variables of the test's own environment.
func withoutThrong(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "THRONG_") })
}

func getJSON(t *testing.T, c *http.Client, url, pw string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.SetBasicAuth("admin", pw)
	resp, err := c.Do(req)
	if err != nil {
		return // polled again
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(v)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
