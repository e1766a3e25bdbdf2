from config.shakespeare_char import *  # noqa: F401,F403  (the shared paper-scale setup)

mlp = "geglu"
