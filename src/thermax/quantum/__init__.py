"""Quantum systems: the neural canonical transformation.

Bases and flow wavefunctions, Laplacian methods and local energies, Metropolis walkers,
the variational density matrix, its trainer (Adam or stochastic reconfiguration), the
quantum dot and the uniform electron gas (Ewald sums, plane waves with a twist), and the
``thermax run quantum-dot`` / ``thermax run electron-gas`` drivers.
"""

from ._basis import AbstractBasis, OscillatorBasis2D, hermite_functions
from ._density_matrix import (
    AbstractOccupations,
    DensityMatrix,
    FixedOccupation,
    SpinOccupations,
)
from ._electron_gas import (
    ElectronGas,
    build_electron_gas,
    electron_gas_report,
    electron_gas_table,
    format_electron_gas_table,
    plot_electron_gas_table,
    sweep_electron_gas,
    write_electron_gas_table,
)
from ._ewald import EwaldSum
from ._hamiltonian import AbstractQuantumSystem, QuantumDot
from ._jastrow import Jastrow
from ._laplacian import (
    AbstractLaplacian,
    ForwardLaplacian,
    HutchinsonLaplacian,
    LoopLaplacian,
    kinetic_energy,
)
from ._metropolis import WalkerState, adapt_width, init_walkers, metropolis_step
from ._planewave import (
    PlaneWaveBasis,
    box_length_for_density,
    closed_shell_counts,
    fermi_temperature,
    fermi_wavevector,
    require_closed_shell,
)
from ._run import QuantumRun, build_quantum_dot, execute_quantum, quantum_summary
from ._sr import CGSR, SR, AbstractSRSolver, DenseSR, MinSR, SRState, score_matrix
from ._trainer import QuantumStats, QuantumTrainer, QuantumTrainState, trainable
from ._wavefunction import (
    AbstractWavefunction,
    FlowSlater,
    join_occupation,
    split_occupation,
)

__all__ = ["CGSR", "SR", "AbstractBasis", "AbstractLaplacian", "AbstractOccupations",
           "AbstractQuantumSystem", "AbstractSRSolver", "AbstractWavefunction", "DenseSR",
           "DensityMatrix", "FixedOccupation", "FlowSlater", "ForwardLaplacian",
           "HutchinsonLaplacian", "Jastrow", "LoopLaplacian", "MinSR", "OscillatorBasis2D",
           "QuantumDot", "QuantumRun", "QuantumStats", "QuantumTrainState", "QuantumTrainer",
           "SRState", "SpinOccupations", "WalkerState", "adapt_width", "build_quantum_dot",
           "execute_quantum", "hermite_functions", "init_walkers", "join_occupation",
           "kinetic_energy", "metropolis_step", "quantum_summary", "score_matrix",
           "split_occupation", "trainable", "ElectronGas", "EwaldSum", "PlaneWaveBasis",
           "box_length_for_density", "build_electron_gas", "closed_shell_counts",
           "electron_gas_report", "fermi_temperature", "fermi_wavevector",
           "require_closed_shell", "electron_gas_table", "plot_electron_gas_table",
           "sweep_electron_gas", "format_electron_gas_table", "write_electron_gas_table"]
