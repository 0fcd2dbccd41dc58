/* moda-infer — placeholder main until the service lands. */
#include <stdio.h>
int main(void)
{
    puts("moda-infer " MODA_VERSION);
    return 0;
}
