# The tour's example configuration (README.md): two terraform_data resources, no provider, no network.
variable "region" {
  type    = string
  default = "eu-central-1"
}

variable "db_password" {
  type    = string
  default = "unset"
}

resource "terraform_data" "net" {
  input = "net-${var.region}"
}

resource "terraform_data" "db" {
  input = "db-${var.db_password}"
}

output "net" {
  value = terraform_data.net.output
}
