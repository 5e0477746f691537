// Package storagetest holds one conformance suite per store role: the speed
// store (RunSpeedStore), the lake (RunLake), the batch view store
// (RunViewStore), the event log's writer (RunLogWriter) and the object
// store the lake and batch views will stand on (RunObjectStore, whose
// interface is objstore.Store). Each role is an
// interface declared here, in the storage packages' types, with its
// contract in the comment: the union of what the layers that consume the
// role use. Every implementation runs the suite of its role from a test of
// its own package, on real servers, so that a new implementation (an
// object-store lake, a Redis Cluster speed store) is held to exactly the
// contract the layers rely on by passing it.
//
// A suite takes a factory that makes a fresh, empty store (its own server,
// namespace or directory) and returns a function opening a handle on it;
// the suite calls that function again for a second handle (another
// process) or after a simulated crash. The suites assert only what the role
// promises: no file layout, no key names.
//
// Besides the suites, the package exports the fixtures that tests of more
// than one package share: the suites' data and oracles (SpeedView,
// RandomSpeedEvents, ExpectedSpeedCells, LakeStream, LakeRows, KeepFirst,
// ...), dead letters and a dead-letter stream as an earlier version wrote
// it (OpenPrePackingLog).
//
// The package is a normal package so that implementation tests anywhere
// can import it; it imports the storage packages (the fixtures open and
// fill stores with them) and nothing above storage.
package storagetest
