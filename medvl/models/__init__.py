"""medvl models: `components/` holds the building blocks (report encoder, volume encoder, ...); the Lightning
module that combines them lives beside this file. Import from the defining modules, e.g.
`from medvl.models.components.tribert import TriBERT` (this package imports nothing, so loading one component
does not pull in the others' dependencies)."""
