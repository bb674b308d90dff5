from common.config_resolvers import register_resolvers

register_resolvers()
