//! The four networks: parameter counts, names, initialiser statistics.

use cifar_kern::models::{ModelKind, ModelState};

#[test]
fn parameter_counts_match_the_tutorial() {
    let expected = [259_338, 272_378, 272_250, 239_146];
    for (kind, n) in ModelKind::ALL.into_iter().zip(expected) {
        assert_eq!(ModelState::<f32>::init(kind, 42).num_params(), n, "{kind}");
    }
}

#[test]
fn model_names_parse_case_insensitively() {
    assert_eq!("GOOGLENET".parse::<ModelKind>(), Ok(ModelKind::GoogleNet));
    assert_eq!("preactresnet".parse::<ModelKind>(), Ok(ModelKind::PreActResNet));
    assert!("vgg".parse::<ModelKind>().unwrap_err().contains("googlenet, resnet"));
}

#[test]
fn initialisers_have_the_specified_variance() {
    let state = ModelState::<f64>::init(ModelKind::ResNet, 42);
    let var = |name: &str| {
        let t = &state.params[name];
        t.data().iter().map(|v| v * v).sum::<f64>() / t.numel() as f64
    };
    // ResNet convs: variance 2 / fan_out, fan_out = 3*3*32.
    let v = var("ResNetBlock_4/Conv_1/kernel");
    assert!((v / (2.0 / 288.0) - 1.0).abs() < 0.05, "{v}");
    // Dense: lecun normal, variance 1 / fan_in = 1/64, truncated to 2 std.
    let dense = &state.params["Dense_0/kernel"];
    let bound = 2.0 * (1.0f64 / 64.0).sqrt() / 0.879_625_661_034_239_8;
    assert!(dense.data().iter().all(|v| v.abs() <= bound));
    let g = ModelState::<f64>::init(ModelKind::GoogleNet, 42);
    let t = &g.params["InceptionBlock_7/Conv_2/kernel"]; // 3x3x48x64, kaiming: 2 / (9*48)
    let v = t.data().iter().map(|v| v * v).sum::<f64>() / t.numel() as f64;
    assert!((v / (2.0 / 432.0) - 1.0).abs() < 0.05, "{v}");
    assert!(state.batch_stats["BatchNorm_0/var"].data().iter().all(|&v| v == 1.0));
}
