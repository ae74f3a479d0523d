//! Flat vectors over all parameters (in the order of `ctx.model_parameters()`,
//! i.e. sorted by name), their layout for results, and gradients as flat vectors.

use lethe_plugin_api::sdk::PluginError;
use lethe_plugin_api::tch::{Kind, Tensor};
use serde_json::{Value, json};

/// Concatenates the tensors, flattened, into one 1-D float tensor.
pub fn flatten(tensors: &[Tensor]) -> Result<Tensor, PluginError> {
    let parts = tensors
        .iter()
        .map(|t| t.f_reshape([-1])?.f_to_kind(Kind::Float))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::f_cat(&parts, 0)?)
}

/// The parameters' values as one flat vector (detached copy).
pub fn flatten_params(params: &[(String, Tensor)]) -> Result<Tensor, PluginError> {
    let values = params
        .iter()
        .map(|(_, p)| p.f_detach())
        .collect::<Result<Vec<_>, _>>()?;
    flatten(&values)
}

/// Splits a flat vector back into tensors shaped like `params`.
pub fn unflatten(flat: &Tensor, params: &[(String, Tensor)]) -> Result<Vec<Tensor>, PluginError> {
    let mut offset = 0i64;
    let mut out = Vec::with_capacity(params.len());
    for (_, p) in params {
        let len = p.numel() as i64;
        out.push(
            flat.f_narrow(0, offset, len)?
                .f_reshape(p.size())?
                .f_to_kind(p.kind())?,
        );
        offset += len;
    }
    if offset != flat.numel() as i64 {
        return Err(PluginError::msg(format!(
            "flat vector has {} entries, the parameters {offset}",
            flat.numel()
        )));
    }
    Ok(out)
}

/// Where each parameter lies in a flat vector: `[{name, shape, offset, numel}]`,
/// saved beside flat results so readers can map entries back to weights.
pub fn layout(params: &[(String, Tensor)]) -> Value {
    let mut offset = 0i64;
    let entries: Vec<Value> = params
        .iter()
        .map(|(name, p)| {
            let numel = p.numel() as i64;
            let e = json!({"name": name, "shape": p.size(), "offset": offset, "numel": numel});
            offset += numel;
            e
        })
        .collect();
    json!({"order": "ctx.model_parameters()", "total": offset, "parameters": entries})
}

/// The gradient of scalar `loss` with respect to `params`, as one flat vector
/// (zeros for parameters the loss does not reach). Does not touch `.grad()`.
/// `keep_graph` keeps the graph for another gradient of the same forward pass.
pub fn grad_flat(
    loss: &Tensor,
    params: &[(String, Tensor)],
    keep_graph: bool,
) -> Result<Tensor, PluginError> {
    let inputs: Vec<&Tensor> = params.iter().map(|(_, p)| p).collect();
    let grads = Tensor::f_run_backward(&[loss], &inputs, keep_graph, false)?;
    let grads = grads
        .into_iter()
        .zip(&inputs)
        .map(|(g, p)| if g.defined() { Ok(g) } else { p.f_zeros_like() })
        .collect::<Result<Vec<_>, _>>()?;
    flatten(&grads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_and_unflatten_round_trip_with_layout() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[5.0f32]);
        let params = vec![("a".to_string(), a), ("b".to_string(), b)];
        let flat = flatten_params(&params).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&flat).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let back = unflatten(&flat, &params).unwrap();
        assert!(back[0].equal(&params[0].1) && back[1].equal(&params[1].1));
        let l = layout(&params);
        assert_eq!(l["total"], 5);
        assert_eq!(l["parameters"][1]["offset"], 4);
    }

    #[test]
    fn flat_gradient_with_an_unused_parameter() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let unused = Tensor::from_slice(&[7.0f32]).set_requires_grad(true);
        let loss = (&a * &a).sum(Kind::Float);
        let params = vec![("a".to_string(), a), ("u".to_string(), unused)];
        let g = grad_flat(&loss, &params, false).unwrap();
        assert_eq!(Vec::<f32>::try_from(&g).unwrap(), vec![2.0, 4.0, 0.0]);
    }
}
