// Package clickhouseexporter writes flowtrace's data through the storage
// extension: messaging spans as events, the correlator's hop and flow
// records, and broker backlog samples.
package clickhouseexporter
