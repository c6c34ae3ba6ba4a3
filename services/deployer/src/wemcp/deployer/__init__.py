"""WeMcp deployer service: deployments of submitted MCP servers: local sandbox, Aliyun FC, Tencent SCF, Kubernetes."""
