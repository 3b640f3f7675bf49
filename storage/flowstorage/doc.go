// Package flowstorage is the collector extension that owns flowtrace's named
// storage backends. Exporters and the web extension find it through the host
// with GetStore.
package flowstorage
