// Package web is the flowtrace_web extension: the JSON API under /api/ that
// reads flows, hops, events and topology through the storage extension, and
// the flow explorer UI. docs/API.md documents the API.
package web
