//! The CUDA graphs of a VITS model: one cache per fixed-shape stage. The stages between them
//! (rounding durations, expanding the prior statistics per frame) read durations back to the
//! host, so a graph cannot span them.

use ferrovox_device::GraphCache;

/// Each stage's graphs, captured per input shape (shared by clones of a model, as the weights
/// are).
#[derive(Debug)]
pub struct StageGraphs {
    /// Token ids and mask to encoder states and prior statistics.
    pub text_encoder: GraphCache,
    /// Encoder states and the duration noise to log-durations.
    pub durations: GraphCache,
    /// The prior sample to the decoder's input (the reverse flow).
    pub flow: GraphCache,
    /// The decoder's input to audio.
    pub decoder: GraphCache,
}

impl StageGraphs {
    pub(crate) fn new() -> Self {
        Self {
            text_encoder: GraphCache::new("vits.text_encoder"),
            durations: GraphCache::new("vits.durations"),
            flow: GraphCache::new("vits.flow"),
            decoder: GraphCache::new("vits.decoder"),
        }
    }

    fn all(&self) -> [&GraphCache; 4] {
        [
            &self.text_encoder,
            &self.durations,
            &self.flow,
            &self.decoder,
        ]
    }

    /// Turns capture and replay on or off for every stage.
    pub fn set_enabled(&self, on: bool) {
        self.all().iter().for_each(|g| g.set_enabled(on));
    }

    /// Why shapes of any stage stay eager.
    pub fn fallbacks(&self) -> Vec<String> {
        self.all().iter().flat_map(|g| g.fallbacks()).collect()
    }

    /// Graphs held per stage: text encoder, durations, flow, decoder.
    pub fn held(&self) -> [usize; 4] {
        self.all().map(GraphCache::graphs)
    }
}
