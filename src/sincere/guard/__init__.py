"""Guards against mock responses: at run time (the response guard) and in code (lint)."""
