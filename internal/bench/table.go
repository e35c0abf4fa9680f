package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

// Labels parses a result label "k=v,k=v".
func Labels(label string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(label, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok {
			m[k] = v
		}
	}
	return m
}

// ReadResults reads JSON lines of Results (-o json output, concatenated).
func ReadResults(r io.Reader) ([]Result, error) {
	var out []Result
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var res Result
		if err := dec.Decode(&res); err == io.EOF {
			return out, nil
		} else if err != nil {
			return out, err
		}
		out = append(out, res)
	}
}

// Median returns the median of xs (the mean of the middle two for an
// even count), 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// A metric is what a table row shows of a result. Each shape's label
// names it: metric=throughput (delivered msg/s, the default), latency
// (p50 and p99), memory (KiB per connection and connect rate).
type metric struct {
	name   string
	unit   string
	value  func(*Result) float64
	higher bool // higher is better
}

var metrics = map[string][]metric{
	"throughput": {{"delivered", "msg/s", func(r *Result) float64 { return r.DeliveredRate }, true}},
	"latency": {
		{"p50", "ms", func(r *Result) float64 { return r.Latency.P50 / 1e3 }, false},
		{"p99", "ms", func(r *Result) float64 { return r.Latency.P99 / 1e3 }, false},
	},
	"memory": {
		{"memory", "KiB/conn", func(r *Result) float64 {
			if r.Conns == nil {
				return 0
			}
			return r.Conns.KiBPerConn
		}, false},
		{"connect rate", "conn/s", func(r *Result) float64 {
			if r.Conns == nil {
				return 0
			}
			return r.Conns.ConnectRate
		}, true},
	},
}

// A target is a DESIGN.md §9 performance target for one (shape, metric)
// of the baseline broker: a ratio against a peer, or an absolute bound.
type target struct {
	text     string
	peer     string  // ratio target against this broker; "" for an absolute one
	min, max float64 // met when the ratio or value is ≥ min (min > 0) or ≤ max (max > 0)
}

// targets are keyed "shape/metric name" with the shape names
// scripts/bench-compare uses.
var targets = map[string]target{
	"qos0/delivered":         {text: "≥ 5× mosquitto", peer: "mosquitto", min: 5},
	"qos1/delivered":         {text: "≥ 3× mosquitto", peer: "mosquitto", min: 3},
	"fanout/delivered":       {text: "≥ 3× mosquitto", peer: "mosquitto", min: 3},
	"latency/p99":            {text: "≤ 2 ms", max: 2},
	"amqp-queue/delivered":   {text: "≥ 100,000 msg/s", min: 100000},
	"amqp-anycast/delivered": {text: "≥ 150,000 msg/s", min: 150000},
	"amqp-latency/p99":       {text: "≤ 5 ms at half load", max: 5},
	"conns/memory":           {text: "≤ 2 KiB/conn", max: 2},
	"conns/connect rate":     {text: "≥ 5,000 conn/s", min: 5000},
}

// targetCell says whether the baseline's median meets the row's target.
func targetCell(t target, med map[string]float64, baseline string) string {
	v, ok := med[baseline]
	if !ok {
		return t.text + ": not measured"
	}
	shown := formatValue(v)
	if t.peer != "" {
		pv, ok := med[t.peer]
		if !ok || pv == 0 {
			return t.text + ": not measured"
		}
		v = v / pv
		shown = fmt.Sprintf("%.2f×", v)
	}
	if (t.min > 0 && v >= t.min) || (t.max > 0 && v <= t.max) {
		return t.text + ": " + shown + ", met"
	}
	return t.text + ": " + shown + ", **not met**"
}

// WriteTable writes a markdown table of medians per (shape, broker) and
// the ratio baseline/peer, from results labelled broker=...,shape=...
// [,metric=...]. A result with mode "skip" marks a cell not applicable
// (its first error says why, in a note under the table).
func WriteTable(w io.Writer, results []Result, baseline string) error {
	type key struct{ shape, broker string }
	groups := map[key][]*Result{}
	var shapes, brokers []string
	shapeMetric := map[string]string{}
	notes := map[string]bool{}
	var noteList []string
	for i := range results {
		r := &results[i]
		l := Labels(r.Label)
		shape, broker := l["shape"], l["broker"]
		if shape == "" || broker == "" {
			continue
		}
		if !slices.Contains(shapes, shape) {
			shapes = append(shapes, shape)
		}
		if !slices.Contains(brokers, broker) {
			brokers = append(brokers, broker)
		}
		if m := l["metric"]; m != "" {
			shapeMetric[shape] = m
		}
		groups[key{shape, broker}] = append(groups[key{shape, broker}], r)
	}
	if i := slices.Index(brokers, baseline); i > 0 {
		brokers = append([]string{baseline}, slices.Delete(brokers, i, i+1)...)
	}
	peers := slices.DeleteFunc(slices.Clone(brokers), func(b string) bool { return b == baseline })

	fmt.Fprintf(w, "| shape | metric |")
	for _, b := range brokers {
		fmt.Fprintf(w, " %s |", b)
	}
	for _, p := range peers {
		fmt.Fprintf(w, " %s / %s |", baseline, p)
	}
	fmt.Fprintf(w, " DESIGN.md §9 target (%s) |", baseline)
	fmt.Fprintln(w)
	fmt.Fprint(w, "|---|---|")
	for range len(brokers) + len(peers) {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprint(w, "---|")
	fmt.Fprintln(w)

	for _, shape := range shapes {
		mname := shapeMetric[shape]
		if mname == "" {
			mname = "throughput"
		}
		for _, m := range metrics[mname] {
			fmt.Fprintf(w, "| %s | %s (%s) |", shape, m.name, m.unit)
			med := map[string]float64{}
			for _, b := range brokers {
				rs := groups[key{shape, b}]
				var vals []float64
				var lost, dup uint64
				skip := ""
				failed := 0
				for _, r := range rs {
					if r.Mode == "skip" {
						skip = "n/a"
						if len(r.Errors) > 0 && !notes[b+": "+r.Errors[0]] {
							notes[b+": "+r.Errors[0]] = true
							noteList = append(noteList, b+": "+r.Errors[0])
						}
						continue
					}
					if r.Received == 0 && r.Conns == nil {
						failed++
						for _, e := range r.Errors {
							if n := fmt.Sprintf("%s %s: %s", b, shape, e); !notes[n] {
								notes[n] = true
								noteList = append(noteList, n)
							}
						}
						continue
					}
					vals = append(vals, m.value(r))
					lost += r.Lost
					dup += r.Duplicated
				}
				switch {
				case len(vals) > 0:
					v := Median(vals)
					med[b] = v
					cell := formatValue(v)
					if m.name == "delivered" && (lost > 0 || dup > 0) {
						cell += fmt.Sprintf(" (lost %s", formatValue(float64(lost)))
						if dup > 0 {
							cell += fmt.Sprintf(", dup %s", formatValue(float64(dup)))
						}
						cell += ")"
					}
					fmt.Fprintf(w, " %s |", cell)
				case skip != "":
					fmt.Fprintf(w, " %s |", skip)
				case failed > 0:
					fmt.Fprint(w, " failed |")
				default:
					fmt.Fprint(w, " — |")
				}
			}
			for _, p := range peers {
				bv, ok1 := med[baseline]
				pv, ok2 := med[p]
				if !ok1 || !ok2 || pv == 0 {
					fmt.Fprint(w, " — |")
					continue
				}
				fmt.Fprintf(w, " %.2f× |", bv/pv)
			}
			if t, ok := targets[shape+"/"+m.name]; ok {
				fmt.Fprintf(w, " %s |", targetCell(t, med, baseline))
			} else {
				fmt.Fprint(w, " — |")
			}
			fmt.Fprintln(w)
		}
	}
	if len(noteList) > 0 {
		fmt.Fprintln(w)
		for _, n := range noteList {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	return nil
}

func formatValue(v float64) string {
	switch {
	case v >= 100:
		return commas(int64(v + 0.5))
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
