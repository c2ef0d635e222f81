package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// DefaultPath is where esbc looks for its configuration file.
const DefaultPath = "/etc/esbc/esbc.yaml"

// ErrNotFound is returned by Load when the file does not exist (the
// caller may then fall back to Embedded).
var ErrNotFound = errors.New("config file not found")

// Load reads path and returns its compiled snapshot. A configuration
// error is returned as Errors (every problem, one per key).
func Load(path string) (*Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", path, ErrNotFound)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes YAML data (from source, for messages) strictly,
// validates it and compiles the snapshot.
func Parse(data []byte, source string) (*Snapshot, error) {
	cfg, schemaErrs, ok := decode(data)
	if !ok {
		return nil, schemaErrs // unreadable YAML
	}
	s, err := compile(cfg, source, false)
	if len(schemaErrs) == 0 {
		return s, err
	}
	var errs Errors
	errors.As(err, &errs) // compile fails only with Errors
	return nil, append(schemaErrs, errs...).sorted()
}

// Embedded returns the built-in loopback configuration used when no file
// exists: LAN udp+tcp on 127.0.0.1:5060, WAN tls on 127.0.0.1:5061 (with a
// self-signed certificate app makes in memory), admin on 127.0.0.1:9090.
func Embedded() *Snapshot {
	cfg := Default()
	cfg.LAN.Listen = []string{"udp://127.0.0.1:5060", "tcp://127.0.0.1:5060"}
	cfg.LAN.Advertise = "127.0.0.1"
	cfg.WAN.Listen = []string{"tls://127.0.0.1:5061"}
	cfg.WAN.Advertise = "127.0.0.1"
	// No trunks are configured, so "only the trunks' servers" would shut
	// the WAN: let loopback peers play the trunk.
	cfg.WAN.ACL.Allow = []string{"127.0.0.0/8", "::1/128"}
	cfg.CDR.File = ""
	s, err := compile(cfg, "embedded", true)
	if err != nil {
		panic("config: embedded default is invalid: " + err.Error())
	}
	return s
}

// decode reads YAML with a fresh viper, checks keys and types against the
// schema (full key paths in errors), expands ${ENV} in strings and
// decodes over the defaults.
func decode(data []byte) (Config, Errors, bool) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return Config{}, Errors{{Msg: fmt.Sprintf("yaml: %v", err)}}, false
	}
	raw := v.AllSettings()
	var errs Errors
	walked := walk("", raw, reflect.TypeOf(Config{}), &errs)
	// Keys with errors were left out of walked: decode and validate the
	// rest too, so that one run reports every problem.
	top, _ := walked.(map[string]any)
	trunksRaw, _ := top["trunks"].([]any)
	delete(top, "trunks")

	cfg := Default()
	if err := mapDecode(top, &cfg); err != nil {
		errs.add("", "%v", err)
	}
	cfg.Trunks = make([]Trunk, 0, len(trunksRaw))
	for i, tr := range trunksRaw {
		t := DefaultTrunk()
		if err := mapDecode(tr, &t); err != nil {
			errs.add(fmt.Sprintf("trunks[%d]", i), "%v", err)
		}
		cfg.Trunks = append(cfg.Trunks, t)
	}
	return cfg, errs, true
}

// invalid marks a value that failed the schema check; walk's callers
// leave it out so that decoding keeps the default.
type invalid struct{}

func mapDecode(in any, out any) error {
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:      out,
		ZeroFields:  true,
		ErrorUnused: true,
		DecodeHook:  mapstructure.StringToTimeDurationHookFunc(),
		TagName:     "mapstructure",
	})
	if err != nil {
		return err
	}
	return d.Decode(in)
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	envRef       = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

// walk checks raw (as YAML decoded it) against type t, reporting unknown
// keys and type mismatches with their full path, and returns raw with
// every string ${ENV}-expanded.
func walk(path string, raw any, t reflect.Type, errs *Errors) any {
	if raw == nil {
		return nil // an empty value keeps its zero value
	}
	if s, ok := raw.(string); ok && t.Kind() != reflect.String {
		raw = expand(path, s, errs) // "${PORT}" may feed a number
	}
	if t == durationType {
		switch x := raw.(type) {
		case string:
			if _, err := time.ParseDuration(x); err != nil {
				errs.add(path, "invalid duration %q (use Go syntax such as 30s)", x)
				return invalid{}
			}
			return x
		case int:
			if x == 0 {
				return "0s"
			}
		}
		errs.add(path, "want a duration such as 30s, got %v", raw)
		return invalid{}
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			errs.add(path, "want a mapping, got %s", kindName(raw))
			return invalid{}
		}
		fields := map[string]reflect.StructField{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			fields[f.Tag.Get("mapstructure")] = f
		}
		out := make(map[string]any, len(m))
		for k, v := range m {
			f, ok := fields[k]
			if !ok {
				errs.add(join(path, k), "unknown key")
				continue
			}
			if w := walk(join(path, k), v, f.Type, errs); w != (invalid{}) {
				out[k] = w
			}
		}
		return out
	case reflect.Slice:
		l, ok := raw.([]any)
		if !ok {
			errs.add(path, "want a list, got %s", kindName(raw))
			return invalid{}
		}
		out := make([]any, len(l))
		bad := false
		for i, v := range l {
			out[i] = walk(fmt.Sprintf("%s[%d]", path, i), v, t.Elem(), errs)
			bad = bad || out[i] == (invalid{})
		}
		if bad {
			return invalid{}
		}
		return out
	case reflect.String:
		switch x := raw.(type) {
		case string:
			return expand(path, x, errs)
		case int, int64, uint64, float64, bool:
			// YAML reads 1 or 990500000231 as a number; for a string key
			// that is what the admin meant.
			return fmt.Sprint(x)
		}
		errs.add(path, "want a string, got %s", kindName(raw))
		return invalid{}
	case reflect.Bool:
		if _, ok := raw.(bool); !ok {
			errs.add(path, "want true or false, got %v", raw)
			return invalid{}
		}
	case reflect.Int, reflect.Int64:
		switch x := raw.(type) {
		case int, int64, uint64:
			return x
		case string:
			var n int64
			if _, err := fmt.Sscanf(x, "%d", &n); err == nil && fmt.Sprint(n) == x {
				return n
			}
		}
		errs.add(path, "want an integer, got %v", raw)
		return invalid{}
	}
	return raw
}

func expand(path, s string, errs *Errors) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		v, ok := os.LookupEnv(name)
		if !ok {
			errs.add(path, "environment variable %s is not set", name)
		}
		return v
	})
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func kindName(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int64, uint64, float64:
		return "a number"
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", v), "*")
}
