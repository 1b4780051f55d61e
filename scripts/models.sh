# Shared by the matrix scripts: every fixture and real model of MODELS.md, and where each one's
# model file and calibration/evaluation data live. Source it, then `model_data NAME` sets
# $model and $data (the --calib/--labels/--eval flags).
fixtures="resnet mobilenet vit mlp mlpnet"
real="pp_lcnet_orientation ppocr_mobile_cls ppocr_v4_rec ppocr_v4_det minilm_l3 open_nsfw"
light="light_squeezenet light_shufflenet light_inception_v1 light_inception_v2 light_densenet121 light_resnet50 light_bvlc_alexnet light_zfnet512 light_vgg19"
model_data() {
  local m=$1
  if [ -f "fixtures/$m.onnx" ]; then
    model=fixtures/$m.onnx
    data="--calib fixtures/mnist_calib.npz --labels fixtures/mnist_calib_labels.npy --eval fixtures/mnist_heldout.npz"
  else
    model=.deps/models/$m.onnx
    data="--calib .deps/inputs/${m}_calib.npz --eval .deps/inputs/${m}_eval.npz"
    if [ -f ".deps/inputs/${m}_calib_labels.npy" ]; then
      data="$data --labels .deps/inputs/${m}_calib_labels.npy"
    fi
  fi
}
