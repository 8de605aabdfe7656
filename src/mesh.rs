//! mesh (in progress)
