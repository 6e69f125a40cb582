// Starts Swagger UI on the server's own OpenAPI schema (kept out of the HTML for the CSP).
window.SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  withCredentials: true,
});
