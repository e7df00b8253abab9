//! The burn module of both model families: a stack of linear layers with ReLU
//! between them, and its mapping to and from the flat parameter vector.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::ModelSpec;
use crate::error::{CoreError, Result};

/// A multi-layer perceptron classifier: linear layers with ReLU between them,
/// returning logits over the classes.
#[derive(Module, Debug)]
pub struct MlpClassifier<B: Backend> {
    layers: Vec<Linear<B>>,
}

impl<B: Backend> MlpClassifier<B> {
    /// Returns a freshly initialized model (Kaiming-uniform weights from the
    /// backend's random source).
    pub fn init(spec: &ModelSpec, device: &B::Device) -> Self {
        let layers = spec
            .layer_dims()
            .into_iter()
            .map(|(d_in, d_out)| LinearConfig::new(d_in, d_out).init(device))
            .collect();
        MlpClassifier { layers }
    }

    /// Returns the model whose parameters are `params`, laid out as
    /// [`ModelSpec::tensor_specs`] says.
    ///
    /// # Errors
    /// [`CoreError::InvalidSpec`] for a benchmark-flat spec (it has no
    /// layers); [`CoreError::ParamCountMismatch`] if `params` has the wrong length.
    pub fn from_flat(spec: &ModelSpec, params: &[f32], device: &B::Device) -> Result<Self> {
        if spec.is_benchmark_flat() {
            return Err(CoreError::InvalidSpec(
                "a benchmark-flat model has no layers: it cannot be trained or scored".to_string(),
            ));
        }
        let expected = spec.num_params();
        if params.len() != expected {
            return Err(CoreError::ParamCountMismatch {
                expected: expected as u64,
                actual: params.len() as u64,
            });
        }
        let mut offset = 0;
        let mut layers = Vec::new();
        for (d_in, d_out) in spec.layer_dims() {
            let weight_values = params[offset..offset + d_in * d_out].to_vec();
            offset += d_in * d_out;
            let bias_values = params[offset..offset + d_out].to_vec();
            offset += d_out;
            let weight =
                Tensor::<B, 2>::from_data(TensorData::new(weight_values, [d_in, d_out]), device);
            let bias = Tensor::<B, 1>::from_data(TensorData::new(bias_values, [d_out]), device);
            layers.push(Linear {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
            });
        }
        Ok(MlpClassifier { layers })
    }

    /// Returns the parameters as one flat vector in [`ModelSpec::tensor_specs`] order.
    pub fn to_flat(&self) -> Vec<f32> {
        let mut params = Vec::new();
        for layer in &self.layers {
            params.extend(tensor_values(layer.weight.val()));
            if let Some(bias) = &layer.bias {
                params.extend(tensor_values(bias.val()));
            }
        }
        params
    }

    /// Returns the logits for a batch.
    pub fn forward(&self, input: Tensor<B, 2>) -> Tensor<B, 2> {
        let num_layers = self.layers.len();
        let mut activations = input; // [batch, input_dim]
        for (index, layer) in self.layers.iter().enumerate() {
            activations = layer.forward(activations); // [batch, d_out of layer]
            if index + 1 < num_layers {
                activations = relu(activations);
            }
        }
        activations // [batch, num_classes]
    }
}

fn tensor_values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("model tensors are float32 after convert")
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;
    use crate::model::TensorSpec;

    #[test]
    fn flat_round_trip_preserves_every_parameter() {
        let spec = ModelSpec::mlp(5, vec![7, 3], 2);
        let device = Default::default();
        let params: Vec<f32> = (0..spec.num_params())
            .map(|i| i as f32 * 0.01 - 0.3)
            .collect();
        let model = MlpClassifier::<NdArray>::from_flat(&spec, &params, &device).unwrap();
        assert_eq!(model.to_flat(), params);
        assert_eq!(spec.num_params(), 5 * 7 + 7 + 7 * 3 + 3 + 3 * 2 + 2);
        let total: usize = spec.tensor_specs().iter().map(TensorSpec::num_values).sum();
        assert_eq!(total, spec.num_params());
    }

    #[test]
    fn wrong_parameter_count_is_an_error() {
        let spec = ModelSpec::mlp(5, vec![7], 2);
        let result = MlpClassifier::<NdArray>::from_flat(&spec, &[0.0; 3], &Default::default());
        assert!(matches!(result, Err(CoreError::ParamCountMismatch { .. })));
    }
}
