package config

import (
	"encoding"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvConfigFile names the config file when no --config flag is given.
const EnvConfigFile = "THRONG_CONFIG"

// Flags holds the values of the setting flags bound to a flag set; only
// flags given on the command line override other sources.
type Flags struct {
	vals []*flagValue
}

type flagValue struct {
	s     Setting
	v     string
	isSet bool
}

func (f *flagValue) String() string { return f.v }

func (f *flagValue) Set(v string) error {
	// Check the value now, so that a bad flag is reported by the flag
	// package with the flag's name.
	if err := f.s.Set(Default(), v); err != nil {
		return err
	}
	f.v, f.isSet = v, true
	return nil
}

func (f *flagValue) IsBoolFlag() bool { return f.s.Bool }

// BindFlags registers a flag for every setting on fs.
func BindFlags(fs *flag.FlagSet) *Flags {
	fl := &Flags{}
	def := Default()
	for _, s := range Settings {
		v := &flagValue{s: s}
		fl.vals = append(fl.vals, v)
		usage := s.Usage + " (env " + s.Env + ")"
		if d := s.Get(def); d != "" && d != "0" && d != "false" {
			usage += " (default " + d + ")"
		}
		fs.Var(v, s.Flag, usage)
	}
	return fl
}

// Load builds the effective configuration from defaults, the YAML file
// (skipped if file is empty), the THRONG_* variables in env ("KEY=value"
// entries, as os.Environ returns) and the setting flags in args, each
// overriding the ones before. The result is validated; every error wraps
// ErrInvalid.
func Load(file string, env []string, args []string) (*Config, error) {
	fs := flag.NewFlagSet("throng", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fl := BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", ErrInvalid, fs.Arg(0))
	}
	return Build(file, env, fl)
}

// Build is Load with flags already parsed by the caller (see BindFlags);
// fl may be nil. checks are further checks of the result (serve --check
// passes the data directory's). Every problem is reported, not only the
// first: the file's, the environment's, the flags', Validate's and the
// checks', joined in one error wrapping ErrInvalid, one per line.
func Build(file string, env []string, fl *Flags, checks ...func(*Config) error) (*Config, error) {
	c := Default()
	var errs []error
	if file != "" {
		errs = append(errs, c.readFile(file)...)
	}
	errs = append(errs, c.applyEnv(env)...)
	if fl != nil {
		for _, v := range fl.vals {
			if v.isSet {
				if err := v.s.Set(c, v.v); err != nil {
					errs = append(errs, fmt.Errorf("flag --%s: %w", v.s.Flag, err))
				}
			}
		}
	}
	errs = append(errs, c.problems()...)
	for _, check := range checks {
		if err := check(c); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return c, nil
}

func (c *Config) readFile(file string) []error {
	b, err := os.ReadFile(file)
	if err != nil {
		return []error{fmt.Errorf("config file: %w", err)}
	}
	errs := c.parseYAML(b)
	for i, err := range errs {
		errs[i] = fmt.Errorf("config file %s: %w", file, err)
	}
	return errs
}

// parseYAML merges a YAML document into c. It walks the document against
// the Config type itself rather than leaving it to the YAML package, so
// that every problem is reported, each naming its line and the setting's
// key as the documentation writes it ("line 3: unknown key
// listeners.amqpp"), never a Go type. Unknown keys are an error, so that
// a misspelt setting does not go unnoticed.
func (c *Config) parseYAML(b []byte) []error {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return []error{errors.New(strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	var errs []error
	decodeNode(doc.Content[0], reflect.ValueOf(c).Elem(), "", &errs)
	return errs
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
)

// decodeNode decodes n into v, a struct of the configuration tree at key
// path prefix, appending each problem to errs.
func decodeNode(n *yaml.Node, v reflect.Value, prefix string, errs *[]error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	where := prefix
	if where == "" {
		where = "the configuration"
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "listeners:" with nothing under it
	}
	if n.Kind != yaml.MappingNode {
		*errs = append(*errs, fmt.Errorf("line %d: %s: want a mapping of settings, not %s", n.Line, where, describe(n)))
		return
	}
	fields := map[string]int{}
	var names []string
	t := v.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key := kn.Value
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		fi, ok := fields[key]
		if !ok {
			msg := fmt.Sprintf("line %d: unknown key %s", kn.Line, path)
			if near := nearest(key, names); near != "" {
				msg += " (did you mean " + strings.TrimPrefix(prefix+"."+near, ".") + "?)"
			}
			*errs = append(*errs, errors.New(msg))
			continue
		}
		fv := v.Field(fi)
		pt := fv.Addr().Type()
		if fv.Kind() == reflect.Struct && !pt.Implements(textUnmarshaler) && !pt.Implements(yamlUnmarshaler) {
			decodeNode(vn, fv, path, errs)
			continue
		}
		if err := vn.Decode(fv.Addr().Interface()); err != nil {
			*errs = append(*errs, fmt.Errorf("line %d: %s: %s", vn.Line, path, valueProblem(err, fv, vn)))
		}
	}
}

// valueProblem says what is wrong with a value, in the configuration's
// terms: our own parsers' messages as they are, the YAML package's type
// errors (which name Go types) by what the setting wants.
func valueProblem(err error, fv reflect.Value, n *yaml.Node) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return strings.TrimPrefix(err.Error(), "yaml: ")
	}
	want := "a value"
	switch fv.Kind() {
	case reflect.Bool:
		want = "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		want = "a whole number"
	case reflect.String:
		want = "a string"
	}
	return fmt.Sprintf("%s is not %s", describe(n), want)
}

// describe names a YAML node for a message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// nearest returns the name closest to key if it is a likely misspelling
// (edit distance at most 2, or equal ignoring case), else "".
func nearest(key string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if strings.EqualFold(n, key) {
			return n
		}
		if d := editDistance(key, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// applyEnv applies the THRONG_* variables of the settings table; other
// variables (including THRONG_CONFIG and the CLI's THRONG_SERVER,
// THRONG_USER, THRONG_PASSWORD) are ignored.
func (c *Config) applyEnv(env []string) []error {
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "THRONG_") {
			vars[k] = v
		}
	}
	var errs []error
	for _, s := range Settings {
		v, ok := vars[s.Env]
		if !ok {
			continue
		}
		if err := s.Set(c, v); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", s.Env, err))
		}
	}
	return errs
}
