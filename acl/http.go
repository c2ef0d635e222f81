package acl

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// BansPath is where Handler serves the ban list.
const BansPath = "/api/v1/bans"

// Handler serves the ban API (authentication is the caller's job):
//
//	GET    /api/v1/bans                 → 200 {"bans":[BanInfo...]}
//	DELETE /api/v1/bans/{addr}          → 204, or 404 if addr was not banned
//	POST   /api/v1/bans/{addr}?for=1h   → 204 (manual ban; default: rate_limit.ban),
//	                                      409 for a trusted source
//
// Mount it on both BansPath and BansPath+"/".
func (g *Guard) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.Path, BansPath)
		rest = strings.TrimPrefix(rest, "/")
		if rest == "" {
			if r.Method != http.MethodGet {
				w.Header().Set("Allow", "GET")
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			bans := g.Bans()
			if bans == nil {
				bans = []BanInfo{}
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(struct {
				Bans []BanInfo `json:"bans"`
			}{bans})
			return
		}
		a, err := netip.ParseAddr(rest)
		if err != nil {
			http.Error(w, "bad address: "+err.Error(), http.StatusBadRequest)
			return
		}
		switch r.Method {
		case http.MethodDelete:
			if !g.Unban(a) {
				http.Error(w, "not banned", http.StatusNotFound)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		case http.MethodPost:
			d := g.Config().RateLimit.Ban
			if s := r.URL.Query().Get("for"); s != "" {
				if d, err = time.ParseDuration(s); err != nil || d <= 0 {
					http.Error(w, "bad duration", http.StatusBadRequest)
					return
				}
			}
			if !g.Ban(a, d) {
				http.Error(w, "trusted source: not banned", http.StatusConflict)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Allow", "DELETE, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
}
