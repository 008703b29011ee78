// blip2/dist/launch.hpp: a program's communicator: MPI's when the program was started by mpirun (and
// built with blip2::mpi), one process otherwise.
//
//   int main(int argc, char** argv) {
//     return blip2::with_communicator(argc, argv, [&](auto& comm) { return run(comm); });  // run: int
//   }
//
// Under mpirun: mpi_session (MPI_Init_thread ... MPI_Finalize) around f(mpi_communicator). When f returns a
// non-zero status on a rank of several, the whole job is ended with that status (mpi_session::abort): the
// other ranks may be waiting for this one in a collective. Without blip2::mpi, or without mpirun, f gets a
// single_process_communicator and MPI is never initialised.
#pragma once
#include <utility>

#include "blip2/dist/communicator.hpp"
#if defined(BLIP2_HAS_MPI)
#include "blip2/dist/mpi_communicator.hpp"
#endif

namespace blip2 {

template <class F>
int with_communicator([[maybe_unused]] int& argc, [[maybe_unused]] char**& argv, F&& f) {
#if defined(BLIP2_HAS_MPI)
  if (mpi_session::launched_by_mpirun()) {
    mpi_session mpi(argc, argv);
    mpi_communicator comm;
    const int rc = std::forward<F>(f)(comm);
    if (rc != 0 && comm.size() > 1) mpi_session::abort(rc);
    return rc;
  }
#endif
  single_process_communicator one;
  return std::forward<F>(f)(one);
}

}  // namespace blip2
