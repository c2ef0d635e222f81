package trunk

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultRegisterExpires   = 600 * time.Second
	DefaultOptionsInterval   = 30 * time.Second // the config default of options_interval; New does not apply it (0 = off)
	DefaultFailoverTimeout   = 2 * time.Second
	DefaultFailbackHoldDown  = 60 * time.Second
	DefaultKeepaliveInterval = 30 * time.Second
	DefaultNATRefresh        = 60 * time.Second
	DefaultRetryMin          = 2 * time.Second
	DefaultRetryMax          = 5 * time.Minute
)

// Auth methods of Config.AuthMethod.
const (
	AuthDigest = "digest"
	AuthIP     = "ip"
)

// Config is the runtime configuration of one trunk. The app builds it from
// the config snapshot; zero durations take the defaults above.
type Config struct {
	Name      string   // trunks[].name; metric label, health key
	Domain    string   // trunk domain: SRV name, host of From/To/Request-URI in REGISTER
	Transport string   // "udp" | "tcp" | "tls"
	Servers   []string // static "host:port" in priority order; empty = DNS (RFC 3263)

	AuthMethod string // AuthDigest | AuthIP; AuthIP never registers
	Username   string
	Password   string
	Register   bool // send REGISTER (AuthDigest only)

	RegisterExpires   time.Duration // Expires asked for; default 600s
	OptionsInterval   time.Duration // OPTIONS keepalive/probe period; 0 (or < 0) = off, as options_interval: 0 (the config layer supplies the 30s default)
	FailoverTimeout   time.Duration // no first answer in this time = target down; default 2s
	FailbackHoldDown  time.Duration // a recovered target is preferred again after this; default 60s
	KeepaliveInterval time.Duration // RFC 5626 CRLF ping on tcp/tls; default 30s; < 0 disables
	NATRefresh        time.Duration // re-REGISTER period when NAT is detected; default 60s
	RetryMin          time.Duration // first registration retry delay; default 2s
	RetryMax          time.Duration // cap of the exponential backoff; default 5m

	Channels int // simultaneous calls; 0 = unlimited

	ContactHost string // advertised WAN address put in Contact
	ContactPort int    // advertised WAN port of Transport
	UserAgent   string // User-Agent of REGISTER/OPTIONS; "" = none
}

// Equal reports whether two configs are the same in every field.
func (c Config) Equal(o Config) bool {
	s1, s2 := c.Servers, o.Servers
	c.Servers, o.Servers = nil, nil
	return reflect.DeepEqual(c, o) && slices.Equal(s1, s2)
}

// equalButChannels reports whether c and o differ at most in Channels, the
// one field a running trunk applies in place.
func (c Config) equalButChannels(o Config) bool {
	o.Channels = c.Channels
	return c.Equal(o)
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.RegisterExpires, DefaultRegisterExpires)
	def(&c.FailoverTimeout, DefaultFailoverTimeout)
	def(&c.FailbackHoldDown, DefaultFailbackHoldDown)
	def(&c.KeepaliveInterval, DefaultKeepaliveInterval)
	def(&c.NATRefresh, DefaultNATRefresh)
	def(&c.RetryMin, DefaultRetryMin)
	def(&c.RetryMax, DefaultRetryMax)
	if c.RetryMax < c.RetryMin {
		c.RetryMax = c.RetryMin
	}
	if c.AuthMethod == "" {
		c.AuthMethod = AuthDigest
	}
	c.Servers = slices.Clone(c.Servers)
}

func (c *Config) validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	switch c.Transport {
	case "udp", "tcp", "tls":
	default:
		errs = append(errs, fmt.Errorf("transport %q: want udp, tcp or tls", c.Transport))
	}
	if c.Domain == "" && len(c.Servers) == 0 {
		errs = append(errs, errors.New("neither domain nor servers set"))
	}
	switch c.AuthMethod {
	case AuthDigest, AuthIP:
	default:
		errs = append(errs, fmt.Errorf("auth method %q: want digest or ip", c.AuthMethod))
	}
	if c.registers() {
		if c.Username == "" {
			errs = append(errs, errors.New("register needs a username"))
		}
		if c.ContactHost == "" || c.ContactPort <= 0 {
			errs = append(errs, errors.New("register needs the advertised contact host and port"))
		}
		if c.RegisterExpires < time.Second {
			errs = append(errs, fmt.Errorf("register expires %s: want at least 1s", c.RegisterExpires))
		}
	}
	if c.Channels < 0 {
		errs = append(errs, fmt.Errorf("channels %d: want >= 0", c.Channels))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("trunk %q: %w", c.Name, err)
	}
	return nil
}

func (c *Config) registers() bool { return c.Register && c.AuthMethod == AuthDigest }

// host is the domain used in URIs: Domain, else the first static server's host.
func (c *Config) host() string {
	if c.Domain != "" {
		return c.Domain
	}
	return hostOf(c.Servers[0])
}
