package web

import (
	"net"
	"net/http"
	"strings"
)

// hostGuard refuses requests whose Host header names none of the server's
// names. A server on loopback trusts the local machine; without the check a
// web page the user visits could point its own domain at 127.0.0.1 (DNS
// rebinding) and read the API from the browser.
type hostGuard struct {
	local   bool            // accept loopback addresses and localhost names
	allowed map[string]bool // further names, lower case, without port
	next    http.Handler
}

// newHostGuard guards next when the server listens on loopback, or when
// allowed names are configured; otherwise any Host is served.
func newHostGuard(listenAddr net.Addr, allowed []string, next http.Handler) http.Handler {
	tcp, ok := listenAddr.(*net.TCPAddr)
	local := ok && tcp.IP.IsLoopback()
	if !local && len(allowed) == 0 {
		return next
	}
	g := &hostGuard{local: local, allowed: map[string]bool{}, next: next}
	for _, h := range allowed {
		g.allowed[strings.ToLower(h)] = true
	}
	return g
}

func (g *hostGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.accepts(r.Host) {
		g.next.ServeHTTP(w, r)
		return
	}
	writeJSON(w, http.StatusForbidden, errorJSON{
		Error: "host " + r.Host + " is not served here; list it in flowtrace_web's allowed_hosts",
	})
}

func (g *hostGuard) accepts(hostHeader string) bool {
	host := strings.ToLower(hostHeader)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if g.allowed[host] {
		return true
	}
	if !g.local {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}
