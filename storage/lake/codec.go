package lake

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go/format"
)

// zstdCodec is the lake files' compression: zstd at its default level,
// with encoders that live as long as the process. (parquet-go's own codec
// keeps its encoders in a pool the garbage collector empties; under a
// memory limit the collector runs often, and every new encoder allocates
// its 8 MiB history again: 2.4 GB of allocation in 20 s of full ingest.)
// A page is compressed on its own, so a window larger than a page (1 MiB)
// would only cost memory. EncodeAll and DecodeAll are safe for concurrent
// use.
type zstdCodec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

var lakeCodec = newZstdCodec()

func newZstdCodec() *zstdCodec {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(2), zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(1<<20))
	if err != nil {
		panic(fmt.Sprintf("lake: zstd encoder: %v", err))
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(2))
	if err != nil {
		panic(fmt.Sprintf("lake: zstd decoder: %v", err))
	}
	return &zstdCodec{enc: enc, dec: dec}
}

func (c *zstdCodec) String() string { return "ZSTD" }

func (c *zstdCodec) CompressionCodec() format.CompressionCodec { return format.Zstd }

func (c *zstdCodec) Encode(dst, src []byte) ([]byte, error) {
	return c.enc.EncodeAll(src, dst[:0]), nil
}

func (c *zstdCodec) Decode(dst, src []byte) ([]byte, error) {
	return c.dec.DecodeAll(src, dst[:0])
}
