//! The protobuf codec every generated stub uses: prost's, with a smaller encode buffer.
//!
//! tonic allocates each RPC's encode buffer up front (8 KiB by default) and keeps it for the
//! life of the call. For server streams that stay open and mostly idle (subscriptions,
//! consumers, lock holds), that buffer is most of what a stream costs the server, so it starts
//! at 1 KiB here and grows only for larger messages. Decoding keeps tonic's default: a
//! message's decode buffer lives while the message is read, and after it only where a decoded
//! `bytes` field generated as `Bytes` (pub/sub payloads) still shares it.

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a call's encode buffer.
const ENCODE_BUFFER: usize = 1024;
/// How much encoded output a stream batches before yielding it (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost's codec with a 1 KiB initial encode buffer.
#[derive(Debug, Clone, Copy)]
pub struct RookeryCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for RookeryCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> Codec for RookeryCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        // tonic sizes the buffer from the encoder's own `buffer_settings`.
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}
