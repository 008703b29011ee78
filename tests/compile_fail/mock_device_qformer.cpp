// compile_mock_device_qformer: the Q-Former's forward and backward instantiated on a device backend
// that exists only as declarations (a memory space the host cannot read, a buffer for it, and a kernel
// declared for every op, defined for none). It is compiled, never run: any line of the model that
// touches device memory from the host (an element access, a host-only view passed to an op) is a
// compile error here. With -DBLIP2_MOCK_INJECT_HOST_LINE one such line is added, and the file must then
// fail to compile (compile_fail_mock_device_host_line): the check itself can fail.
#include "blip2/models/qformer/pass.hpp"

namespace mock {
struct device_space {
  static constexpr const char* name = "mock_device";
  static constexpr bool host_accessible = false;
};
struct device_backend {
  using memory_space = device_space;
  static constexpr const char* name = "mock";
};
}  // namespace mock

namespace blip2 {
// device memory: allocation declared only
template <class T>
class buffer<T, mock::device_space> {
 public:
  T* data();
  const T* data() const;
  std::size_t size() const;
  void reserve_elements(std::size_t n);
};
// every op declared, none defined
template <class Op>
struct kernel<mock::device_backend, Op> {
  template <class... Args>
  static void run(mock::device_backend&, Args&&...);
};
}  // namespace blip2

using namespace blip2;
using dev = mock::device_space;

void instantiate(const qformer_model_config& cfg, tensor_view<const float, 3, dev> image,
                 tensor_view<const index_t, 2> ids, tensor_view<const index_t, 2> mask, std::span<const index_t> pairs,
                 tensor_view<const float, 2, dev> dout) {
  mock::device_backend be;
  qformer_model<float, dev> m(cfg);
  m.zero_grad(be);
  image_kv_state<float, dev> kv;
  encode_image_kv(be, m, kv, image);
  qformer_pass_state<float, dev> img, joint, itg;
  qformer_pass_inputs<float, dev> in;
  in.batch = 2;
  in.queries = true;
  in.image = &kv;
  qformer_forward(be, m, img, in);
  in.input_ids = ids;
  in.attention_mask = mask;
  in.image_index = pairs;
  in.skip_padding = true;
  qformer_forward(be, m, joint, in);
  qformer_pass_inputs<float, dev> cin;
  cin.batch = 2;
  cin.input_ids = ids;
  cin.prefix = &img;
  qformer_forward(be, m, itg, cin);
  qformer_backward(be, m, itg, dout);
  qformer_backward(be, m, joint, dout);
  qformer_backward(be, m, img, dout);
  encode_image_kv_backward(be, m, kv);
#ifdef BLIP2_MOCK_INJECT_HOST_LINE
  (void)img.key_padding(0, 0);  // reading device memory on the host
#endif
}

int main() {}
