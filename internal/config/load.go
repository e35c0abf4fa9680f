package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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
// fl may be nil.
func Build(file string, env []string, fl *Flags) (*Config, error) {
	c := Default()
	if file != "" {
		if err := c.readFile(file); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if err := c.applyEnv(env); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if fl != nil {
		for _, v := range fl.vals {
			if v.isSet {
				if err := v.s.Set(c, v.v); err != nil {
					return nil, fmt.Errorf("%w: flag --%s: %w", ErrInvalid, v.s.Flag, err)
				}
			}
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) readFile(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if err := c.parseYAML(b); err != nil {
		return fmt.Errorf("config file %s: %w", file, err)
	}
	return nil
}

// parseYAML merges a YAML document into c; unknown keys are an error, so
// that a misspelt setting does not go unnoticed.
func (c *Config) parseYAML(b []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// applyEnv applies the THRONG_* variables of the settings table; other
// variables (including THRONG_CONFIG and the CLI's THRONG_SERVER,
// THRONG_USER, THRONG_PASSWORD) are ignored.
func (c *Config) applyEnv(env []string) error {
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "THRONG_") {
			vars[k] = v
		}
	}
	for _, s := range Settings {
		v, ok := vars[s.Env]
		if !ok {
			continue
		}
		if err := s.Set(c, v); err != nil {
			return fmt.Errorf("environment %s: %w", s.Env, err)
		}
	}
	return nil
}
